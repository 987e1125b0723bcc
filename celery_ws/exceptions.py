"""Exceptions raised by celery-ws.

Every error has one root, so callers can catch the package as a whole::

    CeleryWSError
    ├── SettingsError            a setting has a value that cannot work
    ├── ConfirmationError        a confirmation could not complete
    │   ├── ConfirmationTimeout  nobody answered before the deadline
    │   └── TaskCancelled        the task was cancelled (also raised by progress())
    └── NotInTaskError           a task-only helper was called outside a task
"""

from __future__ import annotations

__all__ = [
    "CeleryWSError",
    "ConfirmationError",
    "ConfirmationTimeout",
    "NotInTaskError",
    "SettingsError",
    "TaskCancelled",
]


class CeleryWSError(Exception):
    """Root of every celery-ws error."""


class SettingsError(CeleryWSError, ValueError):
    """A setting is invalid; the message names the variable to fix."""


class ConfirmationError(CeleryWSError):
    """A confirmation request ended without an answer."""


class ConfirmationTimeout(ConfirmationError, TimeoutError):
    """Nobody answered before the deadline and the caller gave no default.

    ``confirm_step`` never proceeds silently: pass ``default=`` to choose
    what a timeout means, or let this propagate to fail the task.
    """

    def __init__(self, callback_id: str, timeout: float) -> None:
        # args are the constructor's: Celery rebuilds exceptions as cls(*args)
        super().__init__(callback_id, timeout)
        self.callback_id = callback_id
        self.timeout = timeout

    def __str__(self) -> str:
        return f"no answer to confirmation {self.callback_id} within {self.timeout:g} s"


class TaskCancelled(ConfirmationError):
    """The person who owns the task cancelled it.

    Raised inside the task by ``progress()`` and ``confirm_step()`` so the
    task stops at a point of its own choosing instead of being killed
    mid-write. ``ProgressTask`` records such a task as revoked, not failed.
    """

    def __init__(self, task_id: str | None) -> None:
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return f"task {self.task_id} was cancelled"


class NotInTaskError(CeleryWSError, RuntimeError):
    """A helper that needs the running task was called outside one."""
