"""Deferred questions: what the task that asks, the server that continues and
the task that continues agree on.

``ProgressTask.ask()`` stores a question with its continuation (a Celery
signature, as ``dict(signature)`` in Celery's own JSON: never pickle) and a
continuation id chosen in advance, and the task returns :func:`waiting_marker`.
When the person answers, or the question expires, a server replica started
with the Celery app claims it (``claim.lua``), reads it back as a
:class:`Claimed`, and sends :meth:`Claimed.message`: the continuation task,
its first argument the answer as JSON, its headers naming the owner, the
workflow and the question it answers. The continuation's ``ProgressTask``
base turns that first argument back into a :class:`~celery_ws.UserConfirmation`
(or a :class:`~celery_ws.ConfirmationTimeout`) with :func:`answer_argument`.

Shared by both sides: nothing here imports the worker or the server package.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeGuard

from pydantic import BaseModel, ValidationError

from .exceptions import ConfirmationError, ConfirmationTimeout
from .protocol import UserConfirmation, loads
from .settings import Settings
from .storage import Call, text

__all__ = [
    "ANSWER_MODEL_HEADER",
    "CONTINUATION_HEADER",
    "OWNER_HEADER",
    "PARENT_HEADER",
    "WORKFLOW_HEADER",
    "Claimed",
    "Continuation",
    "ContinuationMessage",
    "answer_argument",
    "claim_call",
    "is_waiting",
    "model_path",
    "waiting_marker",
]

#: the message header naming the user a task reports to
OWNER_HEADER: Final = "celery_ws_user"
#: a continuation's workflow: the id of the workflow's first task
WORKFLOW_HEADER: Final = "celery_ws_workflow"
#: the task a continuation continues
PARENT_HEADER: Final = "celery_ws_parent"
#: marks a continuation; its value is the callback id of the question it answers
CONTINUATION_HEADER: Final = "celery_ws_continuation"
#: ``module:qualname`` of a typed question's ``answer_model``
ANSWER_MODEL_HEADER: Final = "celery_ws_answer_model"

_MARKER: Final = "celery_ws"
_TIMEOUT: Final = "celery_ws_timeout"
#: the options of ``then`` that travel with the continuation's message
_MESSAGE_OPTIONS: Final = frozenset(
    {"queue", "routing_key", "exchange", "priority", "countdown", "expires", "time_limit", "soft_time_limit"}
)


def waiting_marker(callback_id: str, continuation_id: str, workflow_id: str) -> dict[str, str]:
    """What a task that asked a deferred question returns (its Celery result)."""
    return {
        _MARKER: "waiting",
        "callback_id": callback_id,
        "continuation_id": continuation_id,
        "workflow_id": workflow_id,
    }


def is_waiting(value: Any) -> TypeGuard[dict[str, str]]:
    """Whether a task result is :func:`waiting_marker`'s."""
    return isinstance(value, dict) and value.get(_MARKER) == "waiting" and "continuation_id" in value


def model_path(model: type[BaseModel]) -> str:
    """Where a worker imports ``model`` from: ``module:qualname``."""
    return f"{model.__module__}:{model.__qualname__}"


def _import_model(path: str) -> type[BaseModel]:
    module, _, name = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise TypeError(f"{path} is not a pydantic model")
    return found


def _kombu_json() -> Any:
    return importlib.import_module("kombu.utils.json")


def _json(value: Any) -> str:
    """Celery's JSON (kombu's: datetimes, UUIDs, decimals keep their type)."""
    return str(_kombu_json().dumps(value))


def _unjson(raw: str) -> Any:
    return _kombu_json().loads(raw)


@dataclass(frozen=True, slots=True)
class Continuation:
    """What a deferred question continues with.

    Attributes:
        then: ``dict(signature)`` of the continuation task.
        task_id: the continuation's Celery id, chosen when asking.
        workflow_id: the id of the workflow's first task.
        parent_task_id: the task that asks.
        answer_model: ``module:qualname`` of a typed question's model.
    """

    then: dict[str, Any]
    task_id: str
    workflow_id: str
    parent_task_id: str
    answer_model: str | None = None

    def record(
        self, default: UserConfirmation | bool | None, timeout: float, asker_parent: str | None = None
    ) -> dict[str, str]:
        """The question hash's fields that hold the continuation (``asker_parent``:
        the task the asking task continues, if it is a continuation itself).

        Raises:
            TypeError: ``then``'s arguments are not JSON (Celery's JSON
                serializer cannot carry them either).
        """
        if isinstance(default, UserConfirmation):
            stored_default = default.model_dump_json()
        else:
            stored_default = "" if default is None else ("true" if default else "false")
        return {
            "mode": "deferred",
            "then": _json(self.then),
            "continuation_id": self.task_id,
            "parent_task_id": asker_parent or "",
            "default": stored_default,
            "answer_model": self.answer_model or "",
            "timeout": repr(float(timeout)),
        }


def claim_call(settings: Settings, callback_id: str, continuation_id: str | None, replica: str) -> Call:
    """KEYS and ARGV for ``claim.lua``: ``replica`` claims the question's continuation."""
    home = settings.keys.callback_home(callback_id)
    return (
        [
            home.deferred,
            home.confirm(callback_id),
            home.task(continuation_id) if continuation_id else home.none,
        ],
        [home.prefix, callback_id, time.time(), settings.continuation_lease, replica],
    )


class ContinuationMessage(NamedTuple):
    """The arguments of ``app.send_task`` that send a continuation."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    task_id: str
    headers: dict[str, str]
    options: dict[str, Any]


_CLAIM_FIELDS: Final = (
    "answer",
    "then",
    "continuation_id",
    "workflow_id",
    "task_id",
    "owner",
    "assignees",
    "default",
    "answer_model",
    "timeout",
    "parent_task_id",
    "announced",
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A deferred question whose continuation a replica has claimed (``claim.lua``)."""

    callback_id: str
    #: ``answered``, or ``expired`` (nobody answered in time)
    state: str
    answer: dict[str, Any] | None
    then: dict[str, Any]
    continuation_id: str
    workflow_id: str
    #: the task that asked
    task_id: str
    owner: str
    assignees: list[str]
    default: str
    answer_model: str
    timeout: float
    #: the task the asking task continues, if it is a continuation itself
    parent_task_id: str
    #: whether the events that close the question were stored already
    announced: bool

    @classmethod
    def from_reply(cls, callback_id: str, reply: list[bytes | str | None]) -> Claimed | None:
        if not reply:
            return None
        state, *values = [text(part) or "" for part in reply]
        f = dict(zip(_CLAIM_FIELDS, values, strict=True))
        return cls(
            callback_id=callback_id,
            state=state,
            answer=loads(f["answer"]) if f["answer"] else None,
            then=_unjson(f["then"]),
            continuation_id=f["continuation_id"],
            workflow_id=f["workflow_id"] or f["task_id"],
            task_id=f["task_id"],
            owner=f["owner"],
            assignees=loads(f["assignees"]) if f["assignees"] else [f["owner"]],
            default=f["default"],
            answer_model=f["answer_model"],
            timeout=float(f["timeout"] or 0),
            parent_task_id=f["parent_task_id"],
            announced=bool(f["announced"]),
        )

    @property
    def timed_out(self) -> bool:
        return self.state != "answered" or self.answer is None

    def first_argument(self) -> dict[str, Any]:
        """The answer as JSON: a UserConfirmation's fields; with a timeout, the
        ``default`` marked ``timed_out``, or without one, a ConfirmationTimeout's."""
        if not self.timed_out:
            answer = self.answer or {}
            confirmation = UserConfirmation(
                proceed=answer["proceed"],
                feedback=answer.get("feedback"),
                callback_id=self.callback_id,
                answered_by=answer.get("answered_by"),
                answered_at=answer.get("answered_at"),
                data=answer.get("data"),
            )
        elif self.default in ("true", "false"):
            confirmation = UserConfirmation(
                proceed=self.default == "true", callback_id=self.callback_id, timed_out=True
            )
        elif self.default:
            confirmation = UserConfirmation.model_validate_json(self.default).model_copy(
                update={"callback_id": self.callback_id, "timed_out": True}
            )
        else:
            return {_TIMEOUT: {"callback_id": self.callback_id, "timeout": self.timeout}}
        return confirmation.model_dump(mode="json")

    def links(self) -> dict[str, str]:
        """``workflow_id`` (and ``parent_task_id``) of the asking task's events."""
        links = {"workflow_id": self.workflow_id}
        if self.parent_task_id:
            links["parent_task_id"] = self.parent_task_id
        return links

    def message(self) -> ContinuationMessage:
        """The continuation: ``then`` with the answer in front of its arguments,
        under the owner, marked as this workflow's continuation of the task that asked."""
        options = self.then.get("options") or {}
        headers = {
            OWNER_HEADER: self.owner,
            WORKFLOW_HEADER: self.workflow_id,
            PARENT_HEADER: self.task_id,
            CONTINUATION_HEADER: self.callback_id,
        }
        if self.answer_model:
            headers[ANSWER_MODEL_HEADER] = self.answer_model
        return ContinuationMessage(
            name=self.then["task"],
            args=[self.first_argument(), *(self.then.get("args") or ())],
            kwargs=dict(self.then.get("kwargs") or {}),
            task_id=self.continuation_id,
            headers=headers,
            options={k: v for k, v in options.items() if k in _MESSAGE_OPTIONS},
        )


def answer_argument(value: Any, answer_model: str | None) -> Any:
    """A continuation's first argument as its task receives it: the
    UserConfirmation (``data`` as an ``answer_model`` instance for a typed
    question), or the ConfirmationTimeout when nobody answered and the question
    had no default. Anything else is returned as it came.

    Raises:
        ConfirmationError: a typed answer that does not fit its model (the
            server checks answers against the model's schema first).
    """
    if not isinstance(value, dict):
        return value
    if _TIMEOUT in value:
        timeout = value[_TIMEOUT]
        return ConfirmationTimeout(timeout["callback_id"], float(timeout["timeout"]))
    try:
        answer = UserConfirmation.model_validate(value)
    except ValidationError:
        return value
    if answer_model and answer.proceed and answer.data is not None:
        try:
            data = _import_model(answer_model).model_validate(answer.data)
        except ValidationError as exc:
            raise ConfirmationError(f"answer to {answer.callback_id} does not fit its model: {exc}") from None
        answer = answer.model_copy(update={"data": data})
    return answer
