"""celery-ws: a live channel between long-running Celery tasks and the people
who started them.

Every public name is importable from here. Names are imported lazily (PEP 562)
so that a Celery worker importing ``celery_ws`` never loads ``websockets`` and
the server never loads the worker side; a type checker reads the imports under
``TYPE_CHECKING``, which must name the same modules as ``_LAZY``
(``tests/test_exports.py`` checks both against ``__all__``).

Elsewhere, at their documented paths: the wire protocol (``celery_ws.protocol``),
the settings' defaults (``celery_ws.settings``), the terminal watcher
(``celery_ws.client.watch``) and test support (``celery_ws.testing``, with the
embedded Redis in ``celery_ws.testing.redis_server``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from ._version import __version__

if TYPE_CHECKING:
    from .client import Client
    from .exceptions import (
        AuthError,
        CeleryWSError,
        ConfirmationError,
        ConfirmationTimeout,
        ConnectionLost,
        ContinuationUnavailable,
        InvalidToken,
        NotInTaskError,
        ProtocolError,
        SettingsError,
        TaskCancelled,
    )
    from .protocol import TaskStepResult, UserConfirmation
    from .publisher import AsyncPublisher, ConfirmOptions, Publisher
    from .server.manager import WebSocketManager
    from .settings import Settings
    from .tokens import TokenVerifier, issue_token
    from .worker.confirm import confirm_step
    from .worker.deferred import final_result
    from .worker.integration import CeleryWS
    from .worker.ownership import OWNER_HEADER
    from .worker.task import ProgressTask

__all__ = [
    "OWNER_HEADER",
    "AsyncPublisher",
    "AuthError",
    "CeleryWS",
    "CeleryWSError",
    "Client",
    "ConfirmOptions",
    "ConfirmationError",
    "ConfirmationTimeout",
    "ConnectionLost",
    "ContinuationUnavailable",
    "InvalidToken",
    "NotInTaskError",
    "ProgressTask",
    "ProtocolError",
    "Publisher",
    "Settings",
    "SettingsError",
    "TaskCancelled",
    "TaskStepResult",
    "TokenVerifier",
    "UserConfirmation",
    "WebSocketManager",
    "__version__",
    "confirm_step",
    "final_result",
    "issue_token",
]

_LAZY = {
    "AuthError": ".exceptions",
    "CeleryWSError": ".exceptions",
    "ConfirmationError": ".exceptions",
    "ConfirmationTimeout": ".exceptions",
    "ConnectionLost": ".exceptions",
    "ContinuationUnavailable": ".exceptions",
    "InvalidToken": ".exceptions",
    "NotInTaskError": ".exceptions",
    "ProtocolError": ".exceptions",
    "SettingsError": ".exceptions",
    "TaskCancelled": ".exceptions",
    "TaskStepResult": ".protocol",
    "UserConfirmation": ".protocol",
    "Publisher": ".publisher",
    "AsyncPublisher": ".publisher",
    "ConfirmOptions": ".publisher",
    "Settings": ".settings",
    "WebSocketManager": ".server.manager",
    "Client": ".client",
    "CeleryWS": ".worker.integration",
    "ProgressTask": ".worker.task",
    "confirm_step": ".worker.confirm",
    "final_result": ".worker.deferred",
    "OWNER_HEADER": ".worker.ownership",
    "issue_token": ".tokens",
    "TokenVerifier": ".tokens",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
