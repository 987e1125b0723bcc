"""Exceptions raised by celery-ws.

Every error has one root, so callers can catch the package as a whole::

    CeleryWSError
    ├── SettingsError            a setting has a value that cannot work (also a ValueError)
    ├── ConfirmationError        a confirmation could not complete
    │   ├── ConfirmationTimeout  nobody answered before the deadline (also a TimeoutError)
    │   └── TaskCancelled        the task was cancelled (also raised by progress())
    ├── NotInTaskError           a task-only helper was called outside a task (also a RuntimeError)
    ├── ContinuationUnavailable  ask() found no server that can send its continuation (also a RuntimeError)
    ├── InvalidToken             the server refuses a connection token
    ├── ProtocolError            the server cannot act on a client frame; becomes an error frame
    ├── AuthError                the client's token was refused (close code 4401)
    └── ConnectionLost           the client's connection closed before a reply (also a ConnectionError)

Each class also stays importable where it is raised (``celery_ws.tokens``,
``celery_ws.protocol``, ``celery_ws.client``), but is defined here, and this
module imports nothing else of the package, so any module can raise them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import ErrorCode

__all__ = [
    "AuthError",
    "CeleryWSError",
    "ConfirmationError",
    "ConfirmationTimeout",
    "ConnectionLost",
    "ContinuationUnavailable",
    "InvalidToken",
    "NotInTaskError",
    "ProtocolError",
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


class ContinuationUnavailable(CeleryWSError, RuntimeError):
    """``ask()`` refused to store a deferred question: no running ``celery-ws
    serve --app`` could send its continuation, so nobody could continue it."""


class InvalidToken(CeleryWSError):
    """A token that is missing, malformed, wrongly signed or expired.

    Its message is safe to show the client: the server sends it as the reason
    of the 4401 close.
    """


class ProtocolError(CeleryWSError):
    """A client frame that cannot be acted on.

    The server answers it with :meth:`frame` and keeps the connection open.
    ``details`` (``field``, ``callback_id``, ...) travel in the error frame.
    """

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.details = details

    def frame(self) -> dict[str, Any]:
        """The error frame to send back."""
        # imported here: protocol.py imports this module to re-export the class
        from .protocol import error_frame

        return error_frame(self.code, self.message, **self.details)


class AuthError(CeleryWSError):
    """The server closed the client's connection with 4401: missing, invalid or
    expired token. Retrying with the same token cannot succeed."""


class ConnectionLost(CeleryWSError, ConnectionError):
    """The connection a request was sent on closed before its reply arrived
    (with ``reconnect=True``; the request is not re-sent: it may have been applied)."""
