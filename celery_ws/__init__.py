"""celery-ws: a live channel between long-running Celery tasks and the people
who started them.

Names are imported lazily (PEP 562) so that a Celery worker importing
``celery_ws`` never loads ``websockets`` and the server never loads the worker
side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .exceptions import (
        CeleryWSError,
        ConfirmationError,
        ConfirmationTimeout,
        NotInTaskError,
        SettingsError,
        TaskCancelled,
    )
    from .protocol import TaskStepResult, UserConfirmation
    from .publisher import AsyncPublisher, Publisher
    from .server.manager import WebSocketManager
    from .settings import Settings
    from .tokens import issue_token
    from .worker.confirm import confirm_step
    from .worker.integration import CeleryWS
    from .worker.ownership import OWNER_HEADER
    from .worker.task import ProgressTask

__all__ = [
    "OWNER_HEADER",
    "AsyncPublisher",
    "CeleryWS",
    "CeleryWSError",
    "ConfirmationError",
    "ConfirmationTimeout",
    "NotInTaskError",
    "ProgressTask",
    "Publisher",
    "Settings",
    "SettingsError",
    "TaskCancelled",
    "TaskStepResult",
    "UserConfirmation",
    "WebSocketManager",
    "__version__",
    "confirm_step",
    "issue_token",
]

_LAZY = {
    "CeleryWSError": ".exceptions",
    "ConfirmationError": ".exceptions",
    "ConfirmationTimeout": ".exceptions",
    "NotInTaskError": ".exceptions",
    "SettingsError": ".exceptions",
    "TaskCancelled": ".exceptions",
    "TaskStepResult": ".protocol",
    "UserConfirmation": ".protocol",
    "Publisher": ".publisher",
    "AsyncPublisher": ".publisher",
    "Settings": ".settings",
    "WebSocketManager": ".server.manager",
    "CeleryWS": ".worker.integration",
    "ProgressTask": ".worker.task",
    "confirm_step": ".worker.confirm",
    "OWNER_HEADER": ".worker.ownership",
    "issue_token": ".tokens",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'celery_ws' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
