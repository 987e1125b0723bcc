"""The wire protocol: what clients send, what the server and workers emit.

Everything that crosses a socket or Redis is defined here (client frames in
:mod:`celery_ws.actions`, re-exported below) and nowhere else, so the worker
side and the server side agree without importing each other.

Client frames are JSON objects discriminated by ``action`` and validated
strictly. Events are plain dicts built by :func:`event`: they are encoded
once, stored in Redis and forwarded to sockets byte for byte, so a pydantic
model per event would only cost time on the hot path.

Workflows (deferred questions, ``ProgressTask.ask()``): a task stores a
question with a continuation and returns at once; it emits ``task_waiting``
``{task_id, workflow_id, callback_id, continuation_id}`` instead of
``task_succeeded`` (not terminal). Once the person answers, or the question
times out, one server replica sends the continuation (a new Celery task, id
``continuation_id``) and emits ``task_continued`` ``{task_id (the task that
asked), workflow_id, continuation_id, callback_id}``, at least once. Every
event of a continuation, and of whatever continues it, carries ``workflow_id``
(the first task's id) and ``parent_task_id`` (the task it continues). A
connection subscribed to task ``W`` receives the events whose ``task_id`` or
``workflow_id`` is ``W``, ``W``'s history holds them all, and ``state`` on
subscribing to ``W`` is the workflow's latest. A workflow ends with one
terminal event whose ``workflow_id`` is ``W`` (or whose ``task_id`` is ``W``
when nothing continued it); nothing of the workflow is stored after it.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel

from .actions import (
    ACTIONS,
    MAX_DEPTH,
    Ack,
    Auth,
    Cancel,
    ClientAction,
    Confirm,
    EventId,
    Identifier,
    Ping,
    Subscribe,
    Unsubscribe,
    parse_action,
)
from .exceptions import ProtocolError

__all__ = [
    "ACTIONS",
    "CLOSE_UNAUTHORIZED",
    "MAX_DEPTH",
    "SUBPROTOCOL",
    "TERMINAL_EVENT_TYPES",
    "Ack",
    "Auth",
    "Cancel",
    "ClientAction",
    "Confirm",
    "ErrorCode",
    "EventId",
    "EventType",
    "Identifier",
    "Ping",
    "ProtocolError",
    "ReplyType",
    "Subscribe",
    "TaskStepResult",
    "Unsubscribe",
    "UserConfirmation",
    "dumps",
    "error_frame",
    "event",
    "event_order",
    "json_safe",
    "loads",
    "message_event",
    "parse_action",
    "progress_event",
    "step_result_event",
    "with_id",
]


class ReplyType(StrEnum):
    """The ``type`` of each frame the server sends in answer to a client frame.

    Defined once, here, so the server, the clients and the test fixtures cannot
    drift apart. Members are strings: they compare equal to the decoded JSON
    (``frame["type"] == ReplyType.PONG``) and encode as their value.
    """

    #: token mode: the connection's user, sent before anything else
    AUTHENTICATED = "authenticated"
    SUBSCRIPTION_CONFIRMED = "subscription_confirmed"
    UNSUBSCRIBED = "unsubscribed"
    CONFIRMATION_RECEIVED = "confirmation_received"
    CANCEL_RECEIVED = "cancel_received"
    ACK_RECEIVED = "ack_received"
    #: echoes the whole ping frame as ``original_data``
    PONG = "pong"
    #: the answer to any frame that could not be acted on (see :data:`ErrorCode`)
    ERROR = "error"


class EventType(StrEnum):
    """The ``type`` of each event a task (or the server) emits.

    Messages sent with ``broadcast``/``send_to_user`` keep their sender's own
    ``type`` and are not listed here.
    """

    TASK_SENT = "task_sent"
    TASK_STARTED = "task_started"
    TASK_PROGRESS = "task_progress"
    TASK_STEP_RESULT = "task_step_result"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_RETRYING = "task_retrying"
    TASK_CANCELLED = "task_cancelled"
    #: live only, never kept in the history
    HEARTBEAT = "heartbeat"
    CONFIRMATION_ANSWERED = "confirmation_answered"
    CONFIRMATION_EXPIRED = "confirmation_expired"
    #: the task asked a deferred question and returned; not terminal: its
    #: workflow goes on in ``continuation_id`` once the question is answered
    TASK_WAITING = "task_waiting"
    #: the answer (or the timeout) is in and the continuation was sent (at least once)
    TASK_CONTINUED = "task_continued"


#: Events after which a task emits nothing else; the first one wins.
TERMINAL_EVENT_TYPES: Final = frozenset(
    {EventType.TASK_SUCCEEDED, EventType.TASK_FAILED, EventType.TASK_CANCELLED}
)

#: The ``code`` of an error frame (see :func:`error_frame`, :class:`ProtocolError`).
ErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "unknown_action",
    "unknown_callback",
    "unknown_message",
    "invalid_answer",
    "already_answered",
    "confirmation_expired",
    "task_finished",
    "not_found",
    "forbidden",
    "rate_limited",
    "internal_error",
]

#: The versioned subprotocol; selected when a client offers it, optional otherwise.
SUBPROTOCOL: Final = "celery-ws.v1"

#: Close codes the server uses besides the standard ones (1001 going away,
#: 1008 policy violation: sustained rate-limit abuse, 1009 frame too big,
#: 1013 connection limits).
CLOSE_UNAUTHORIZED: Final = 4401


# -- models shared with task code ---------------------------------------------------


class TaskStepResult(BaseModel):
    """The outcome of one step of a task, shown to the person who owns it."""

    step: str
    result: Any = None
    completed: bool = False
    message: str
    status: str
    error_code: str | None = None
    error_message: str | None = None


class UserConfirmation(BaseModel):
    """A person's answer to a confirmation request."""

    proceed: bool
    feedback: str | None = None
    callback_id: str | None = None
    answered_by: str | None = None
    answered_at: float | None = None
    timed_out: bool = False
    #: the validated answer (an ``answer_model`` instance) for typed confirmations
    data: Any = None


# -- events -----------------------------------------------------------------------


def event(type_: str, *, task_id: str | None, user_id: str | None, **fields: Any) -> dict[str, Any]:
    """Build an event. ``id`` is added by Redis when the event is stored."""
    return {
        "type": type_,
        "task_id": task_id,
        "user_id": user_id,
        "timestamp": fields.pop("timestamp", None) or time.time(),
        **fields,
    }


def progress_event(
    task_id: str,
    user_id: str | None,
    current: float,
    total: float | None,
    message: str | None,
    timestamp: float,
) -> dict[str, Any]:
    percent = round(100.0 * current / total, 2) if total else None
    return event(
        "task_progress",
        task_id=task_id,
        user_id=user_id,
        timestamp=timestamp,
        current=current,
        total=total,
        progress=percent,
        message=message,
    )


def event_order(event_id: bytes | str) -> tuple[int, int]:
    """Sort key of an event id ("1700000000000-3" → (1700000000000, 3))."""
    text = event_id.decode() if isinstance(event_id, bytes) else event_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def with_id(event_id: bytes, payload: bytes) -> bytes:
    """Insert the id Redis gave an event into its stored JSON, without re-encoding."""
    return b'{"id":"' + event_id + b'",' + payload[1:]


def error_frame(code: ErrorCode, message: str, **details: Any) -> dict[str, Any]:
    return {"type": ReplyType.ERROR, "code": code, "message": message, **details}


# -- encoding ---------------------------------------------------------------------

_OPTIONS: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """Encode to JSON; anything JSON cannot hold is sent as its ``str()``."""
    return orjson.dumps(value, default=str, option=_OPTIONS)


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)


def json_safe(value: Any) -> Any:
    """A task result as JSON can carry it (sets become lists, objects strings)."""
    return orjson.loads(dumps(value))


def step_result_event(
    result: TaskStepResult,
    *,
    task_id: str | None,
    user_id: str | None,
    step: int | None = None,
    callback_id: str | None = None,
    answer_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    fields = {"answer_schema": answer_schema} if answer_schema is not None else {}
    return event(
        "task_step_result",
        task_id=task_id,
        user_id=user_id,
        **result.model_dump(mode="json"),
        step_number=step,
        callback_id=callback_id,
        **fields,
    )


def message_event(
    message: dict[str, Any], *, user_id: str | None, task_id: str | None = None
) -> dict[str, Any]:
    """A message from ``broadcast``/``send_to_user`` keeps its sender's ``type``."""
    fields = dict(message)
    fields.setdefault("type", "message")
    fields.setdefault("timestamp", time.time())
    fields["user_id"] = user_id
    fields["task_id"] = task_id if task_id is not None else fields.get("task_id")
    return fields
