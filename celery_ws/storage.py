"""The Redis operations both sides share: store an event, open, answer, cancel
and expire a confirmation, claim a deferred question's continuation.

Each operation is a Lua script (``celery_ws/lua``) so it is atomic across any
number of server replicas and worker processes. This module only turns Python
values into the scripts' KEYS and ARGV and their replies back into values; the
callers run them on a sync client (workers, :class:`~celery_ws.Publisher`) or an
asyncio client (the server, :class:`~celery_ws.AsyncPublisher`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Final, Literal, TypeVar, get_args

from .protocol import TERMINAL_EVENT_TYPES, UserConfirmation, dumps, loads
from .settings import Settings

__all__ = [
    "ANSWER",
    "CANCEL",
    "CLAIM",
    "EMIT",
    "EXPIRE",
    "AnswerOutcome",
    "AnswerRefusal",
    "Call",
    "CancelOutcome",
    "EmitResult",
    "ReplyKind",
    "answer_call",
    "answer_payload",
    "answer_reply",
    "cancel_call",
    "cancel_reply",
    "confirmation_from_reply",
    "emit_call",
    "expire_call",
    "index_assignees",
    "open_confirmation",
    "owner_pointers",
    "pipelined",
    "text",
]


def _lua(name: str) -> str:
    """A script with the shared helpers of ``common.lua`` in front."""
    lua = files("celery_ws").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


EMIT: Final = _lua("emit")
ANSWER: Final = _lua("answer")
CANCEL: Final = _lua("cancel")
EXPIRE: Final = _lua("expire")
CLAIM: Final = _lua("claim")

CANCELLED_REPLY: Final = dumps({"cancelled": True})

Call = tuple[list[str], list[Any]]


@dataclass(frozen=True, slots=True)
class EmitResult:
    id: str | None
    """The event id, or None when the event was dropped (a duplicate, or the task
    already ended)."""
    cancelled: bool
    """Whether the task has been cancelled by its owner."""

    @classmethod
    def from_reply(cls, reply: list[Any]) -> EmitResult:
        raw_id, flag = reply
        event_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        return cls(event_id or None, bool(flag))


def pipelined(
    pipe: Any, script: Any, calls: Iterable[Call], *, by_source: bool = False, pointers: Pointers = ()
) -> None:
    """Queue ``script`` (a registered script) on ``pipe`` once per call, as bare
    EVALSHAs, then the owner ``pointers`` (:func:`owner_pointers`): their
    replies come after the calls'.

    redis-py sends ``SCRIPT EXISTS`` before every pipeline that holds a registered
    script: a second round trip per batch. Callers catch ``NoScriptError`` instead
    (Redis restarted or flushed its scripts; no call of the batch ran) and send
    the batch again ``by_source`` (EVAL, which loads the script on whichever
    node of a cluster runs it).
    """
    # by name: redis-py's cluster pipeline refuses its evalsha() method, not the command
    command, body = ("EVAL", script.source) if by_source else ("EVALSHA", script.sha)
    for keys, args in calls:
        pipe.execute_command(command, body, len(keys), *keys, *args)
    for key, owner, ttl in pointers:
        pipe.set(key, owner, ex=ttl)


#: ``(key, owner, ttl)`` of owner pointers to write
Pointers = Sequence[tuple[str, str, int]]


def owner_pointers(settings: Settings, events: Iterable[dict[str, Any]]) -> Pointers:
    """On a cluster, the owner pointer of each task these events belong to (a
    task's home cannot be found from its id alone there; ``keys.py``)."""
    keys = settings.keys
    if not keys.clustered:
        return ()
    owners = {e["task_id"]: e["user_id"] for e in events if e.get("task_id") and e.get("user_id")}
    return [(keys.owner(task_id), owner, settings.history_ttl) for task_id, owner in owners.items()]


def emit_call(
    settings: Settings,
    event: dict[str, Any],
    *,
    callback_id: str | None = None,
    producer: str | None = None,
    seq: int | None = None,
    route_by_task: bool = True,
    lease: float | None = None,
) -> Call:
    """KEYS and ARGV for ``emit.lua``; ``producer``/``seq`` make a retry idempotent.

    ``route_by_task=False`` sends an event to its user only, not to the task's
    history and watchers (a copy of a question for an extra assignee).
    ``lease`` (seconds) marks the task as running until then: its heartbeats
    renew the lease, and a server reports the task lost when it runs out.
    An event with a ``workflow_id`` other than its task also goes to that
    workflow's first task: its history, its state, its watchers. In open mode
    every event also goes to the firehose (connections that follow everything,
    and one id space for all); in token mode nothing is written for it.
    """
    user_id = event.get("user_id")
    broadcast = not user_id and not event.get("task_id")
    task_id = event.get("task_id") if route_by_task else None
    workflow = event.get("workflow_id") if route_by_task else None
    flow = workflow if workflow and workflow != task_id else None
    type_ = event["type"]
    home = settings.keys.home(user_id or task_id)
    none = home.none
    return (
        [
            home.broadcasts if broadcast else none,
            home.user_events(user_id) if user_id else none,
            home.task_events(task_id) if task_id else none,
            home.task(task_id) if task_id else none,
            home.confirm(callback_id) if callback_id else none,
            home.producer(producer) if producer else none,
            home.running if task_id else none,
            home.task_events(flow) if flow else none,
            home.task(flow) if flow else none,
            none if settings.token_mode else settings.keys.firehose,
        ],
        [
            dumps(event),
            user_id or "",
            type_,
            "1" if type_ in TERMINAL_EVENT_TYPES else "0",
            "" if seq is None else seq,
            "",
            settings.history_max_events,
            settings.history_ttl,
            task_id or "",
            "" if lease is None else lease,
            time.time(),
            home.prefix,
            workflow or "",
            "SPUBLISH" if settings.sharded_pubsub else "PUBLISH",
        ],
    )


def open_confirmation(
    pipe: Any,
    settings: Settings,
    callback_id: str,
    *,
    owner: str,
    task_id: str | None,
    step: int | None,
    assignees: list[str],
    deadline: float,
    schema: dict[str, Any] | None = None,
    workflow_id: str | None = None,
    record: dict[str, Any] | None = None,
) -> None:
    """Queue on ``pipe`` (a transaction, sync or asyncio) the writes that open a
    confirmation. They must reach Redis before the request event is emitted, so an
    answer that arrives at once finds the confirmation pending.

    A question asked in a workflow (``workflow_id``, the first task's id) is also
    indexed under that task, so its watchers see it and a cancel of the workflow
    closes it. ``record`` holds more fields for the question's hash (a deferred
    question's continuation). Everything here is in the callback id's home;
    other assignees' indexes are :func:`index_assignees`'."""
    home = settings.keys.callback_home(callback_id)
    ttl = confirmation_ttl(settings, deadline)
    fields = {
        "state": "pending",
        "owner": owner,
        "task_id": task_id or "",
        "step": "" if step is None else step,
        "assignees": dumps(assignees),
        "deadline": repr(deadline),
        "asked_at": repr(time.time()),
        **({"schema": dumps(schema)} if schema is not None else {}),
        **({"workflow_id": workflow_id} if workflow_id else {}),
        **(record or {}),
    }
    pipe.hset(home.confirm(callback_id), mapping=fields)
    pipe.expire(home.confirm(callback_id), ttl)
    pending = [home.pending, home.user_pending(owner)]
    if task_id:
        pending.append(home.task_pending(task_id))
    if workflow_id and workflow_id != task_id:
        pending.append(home.task_pending(workflow_id))
    _index(pipe, pending, callback_id, deadline, ttl)


def index_assignees(
    pipe: Any, settings: Settings, callback_id: str, assignees: list[str], *, deadline: float
) -> None:
    """Queue on ``pipe`` (no transaction: each assignee's index is in the
    assignee's home) the entries that show an open question to ``assignees``
    other than its owner when they subscribe. The scripts that close the
    question leave them: readers skip closed questions."""
    ttl = confirmation_ttl(settings, deadline)
    keys = settings.keys
    _index(pipe, [keys.home(user).user_pending(user) for user in assignees], callback_id, deadline, ttl)


def _index(pipe: Any, indexes: list[str], callback_id: str, deadline: float, ttl: int) -> None:
    for key in indexes:
        pipe.zadd(key, {callback_id: deadline})
        pipe.expire(key, ttl)


def confirmation_ttl(settings: Settings, deadline: float) -> int:
    """Seconds a question's keys live: until its deadline, then the history's window."""
    return int(deadline - time.time()) + settings.history_ttl


def answer_payload(proceed: bool, feedback: str | None, answered_by: str | None, data: Any = None) -> bytes:
    return dumps(
        {
            "proceed": proceed,
            "feedback": feedback,
            "answered_by": answered_by,
            "answered_at": time.time(),
            "data": data,
        }
    )


def answer_call(
    settings: Settings,
    callback_id: str,
    answered_by: str | None,
    answer: bytes,
    *,
    checked: bool = True,
    claimer: str | None = None,
) -> Call:
    """``checked=False``: a typed question returns its schema instead of taking the
    answer. ``claimer``: the replica that claims a deferred question's
    continuation with the answer, to send it at once (one that knows the app)."""
    home = settings.keys.callback_home(callback_id)
    return (
        [home.confirm(callback_id), home.confirm_reply(callback_id), home.deferred],
        [
            home.prefix,
            callback_id,
            answered_by or "",
            answer,
            time.time(),
            settings.history_ttl,
            "1" if checked else "0",
            claimer or "",
            settings.continuation_lease,
        ],
    )


def cancel_call(
    settings: Settings,
    task_id: str,
    *,
    owner: str | None,
    check: str | None,
    recorded_by: str | None,
    workflow_id: str | None = None,
    next_id: str | None = None,
) -> Call:
    """``owner``: the task's, as read before (its home; None: a task without
    one, or unknown); ``check``: the user who must own the task (None: no
    check); ``workflow_id`` and ``next_id``: the workflow's first task and next
    continuation as read just before (``cancel.lua`` replies ``moved`` when the
    latter changed meanwhile)."""
    home = settings.keys.home(owner or task_id)
    workflow = workflow_id or task_id
    return (
        [home.task(task_id), home.task(workflow), home.task(next_id) if next_id else home.none],
        [
            home.prefix,
            task_id,
            check or "",
            CANCELLED_REPLY,
            settings.history_ttl,
            workflow,
            next_id or "",
            recorded_by or "",
        ],
    )


# -- what the scripts answer -----------------------------------------------------
# Lua replies with bare strings; they become these Literals where they are
# decoded, so a caller that forgets an outcome, or compares with a misspelt
# one, fails mypy instead of a client. Keep them in step with lua/*.lua.

#: Why ``answer.lua`` refused an answer: the person may not answer it, there is
#: no such question, or the question's state (it is no longer pending).
AnswerRefusal = Literal["forbidden", "unknown_callback", "answered", "expired", "cancelled", "closed"]
#: ``answer.lua``'s verdict: taken (``ok``), to be checked against the
#: question's form before it is sent again (``check``), or refused.
AnswerOutcome = Literal["ok", "check", AnswerRefusal]
#: ``cancel.lua``'s verdict: cancelled (``ok``), or why not (``moved``: the
#: workflow's next continuation changed while the caller read it; read again).
CancelOutcome = Literal["ok", "forbidden", "not_found", "finished", "moved"]

_ANSWER_OUTCOMES: Final[tuple[AnswerOutcome, ...]] = get_args(AnswerOutcome)
_CANCEL_OUTCOMES: Final[tuple[CancelOutcome, ...]] = get_args(CancelOutcome)
_Outcome = TypeVar("_Outcome", bound=str)


def answer_reply(reply: Sequence[bytes | str | None]) -> tuple[AnswerOutcome, list[str | None]]:
    """``answer.lua``'s reply: the verdict and what comes with it (``ok``:
    task id, owner, asked at, ``blocking`` or ``deferred``; ``check``: the
    form's JSON Schema)."""
    outcome, *details = [text(part) for part in reply]
    return _one_of(_ANSWER_OUTCOMES, outcome, "answer.lua"), details


def cancel_reply(reply: Sequence[bytes | str | None]) -> tuple[CancelOutcome, str | None]:
    """``cancel.lua``'s reply: the verdict and the task's owner (None when the
    task is unknown, or the requester may not learn who owns it)."""
    outcome, *owner = [text(part) for part in reply]
    return _one_of(_CANCEL_OUTCOMES, outcome, "cancel.lua"), owner[0] if owner else None


def _one_of(outcomes: tuple[_Outcome, ...], value: str | None, script: str) -> _Outcome:
    """``value`` as one of ``outcomes``.

    Raises:
        RuntimeError: a script replied with something this module does not
            know, so the two were changed apart.
    """
    for outcome in outcomes:
        if outcome == value:
            return outcome
    raise RuntimeError(f"{script} replied {value!r}, none of {', '.join(outcomes)}")


def expire_call(settings: Settings, callback_id: str) -> Call:
    home = settings.keys.callback_home(callback_id)
    return ([home.confirm(callback_id)], [home.prefix, callback_id])


ReplyKind = Literal["answered", "cancelled"]


def confirmation_from_reply(callback_id: str, raw: bytes | str) -> tuple[ReplyKind, UserConfirmation]:
    """Read what ``answer.lua`` or ``cancel.lua`` pushed to a reply list."""
    reply = loads(raw)
    if reply.get("cancelled"):
        return "cancelled", UserConfirmation(proceed=False, callback_id=callback_id)
    return "answered", UserConfirmation(
        proceed=reply["proceed"],
        feedback=reply.get("feedback"),
        callback_id=callback_id,
        answered_by=reply.get("answered_by"),
        answered_at=reply.get("answered_at"),
        data=reply.get("data"),
    )


def text(value: bytes | str | None) -> str | None:
    """Decode a Redis reply element (clients here run without decode_responses)."""
    return value.decode() if isinstance(value, bytes) else value
