"""What a question is, apart from any I/O: its options, its events, and what
its reply or its closing state means."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from pydantic import BaseModel, ValidationError

from ..exceptions import ConfirmationError, ConfirmationTimeout, TaskCancelled
from ..protocol import TaskStepResult, UserConfirmation, event, step_result_event
from ..settings import Settings
from ..storage import confirmation_from_reply, index_assignees, open_confirmation

if TYPE_CHECKING:
    from .core import Pipe

__all__ = ["ConfirmOptions", "Default", "Outgoing", "Question"]

#: What a timed-out confirmation returns: an answer, a bare proceed flag, or
#: None to raise :class:`~celery_ws.ConfirmationTimeout`.
Default = UserConfirmation | bool | None


class ConfirmOptions(TypedDict, total=False):
    """The keywords of every way to ask a question: ``confirm_step()``,
    ``ProgressTask.confirm``, ``notify_user`` of both publishers and of
    ``WebSocketManager``. Each takes them as ``**options``, so none can drop one
    on its way to the publisher."""

    timeout: float | None
    """Seconds to wait; ``WEBSOCKET_CALLBACK_TIMEOUT`` when None."""
    default: Default
    """Returned when nobody answers in time (``True``/``False`` or a
    UserConfirmation); without it a timeout raises."""
    assignees: list[str] | None
    """Users allowed to answer; the asked user (a task's owner) when None."""
    answer_model: type[BaseModel] | None
    """A pydantic model for a typed answer: its JSON Schema goes with the
    question (a page can render it as a form), answers that do not fit are
    refused while the asker keeps waiting, and the validated instance is the
    returned confirmation's ``data``."""


class Outgoing(NamedTuple):
    """An event to store, with how :func:`~celery_ws.storage.emit_call` routes it."""

    event: dict[str, Any]
    route_by_task: bool = True
    callback_id: str | None = None


class Question:
    """One confirmation request: everything both publishers need, no I/O.

    Raises:
        TypeError: ``options`` holds a keyword :class:`ConfirmOptions` does not
            define (a caller without a type checker would otherwise lose it).
    """

    def __init__(
        self,
        settings: Settings,
        step_result: TaskStepResult,
        owner: str,
        task_id: str | None,
        step: int | None,
        options: ConfirmOptions,
        *,
        links: dict[str, str] | None = None,
        record: Callable[[Question], dict[str, str]] | None = None,
    ) -> None:
        unknown = options.keys() - ConfirmOptions.__optional_keys__
        if unknown:
            raise TypeError(
                f"unexpected keyword argument {', '.join(sorted(unknown))}; a question takes "
                f"{', '.join(sorted(ConfirmOptions.__optional_keys__))}"
            )
        self.settings = settings
        self.callback_id = settings.keys.new_callback_id(owner)
        timeout = options.get("timeout")
        self.timeout = settings.callback_timeout if timeout is None else timeout
        self.deadline = time.time() + self.timeout
        self.owner, self.task_id, self.step = owner, task_id, step
        self.default = options.get("default")
        self.assignees = list(dict.fromkeys(options.get("assignees") or [owner]))
        self.answer_model = options.get("answer_model")
        self.schema = self.answer_model.model_json_schema() if self.answer_model is not None else None
        self.step_result = step_result
        #: ``workflow_id``/``parent_task_id`` of a question asked in a workflow:
        #: on each of its events, and it is indexed under the workflow too
        self.links = links or {}
        #: more fields for the question's hash (a deferred question's continuation)
        self.record = record(self) if record is not None else None

    def open(self, pipe: Pipe) -> None:
        open_confirmation(
            pipe,
            self.settings,
            self.callback_id,
            owner=self.owner,
            task_id=self.task_id,
            step=self.step,
            assignees=self.assignees,
            deadline=self.deadline,
            schema=self.schema,
            workflow_id=self.links.get("workflow_id"),
            record=self.record,
        )

    @property
    def others(self) -> list[str]:
        """The assignees besides the owner."""
        return [user for user in self.assignees if user != self.owner]

    def index_elsewhere(self, pipe: Pipe) -> None:
        """Queue the open question's entries for :attr:`others` (in their homes,
        so not in :meth:`open`'s transaction)."""
        index_assignees(pipe, self.settings, self.callback_id, self.others, deadline=self.deadline)

    def _to_everyone(
        self, build: Callable[[str], dict[str, Any]], *, keep_request: bool = False
    ) -> list[Outgoing]:
        """An event for the owner (stored with the task's history) and a copy for
        each other assignee, who does not otherwise see the owner's events."""
        return [
            Outgoing(
                {**build(user), **self.links},
                route_by_task=user == self.owner,
                callback_id=self.callback_id if keep_request and user == self.owner else None,
            )
            for user in dict.fromkeys([self.owner, *self.assignees])
        ]

    def requests(self) -> list[Outgoing]:
        return self._to_everyone(
            lambda user: step_result_event(
                self.step_result,
                task_id=self.task_id,
                user_id=user,
                step=self.step,
                callback_id=self.callback_id,
                answer_schema=self.schema,
            ),
            keep_request=True,
        )

    @property
    def remaining(self) -> float:
        return self.deadline - time.time()

    @property
    def reply_key(self) -> str:
        return self.settings.keys.callback_home(self.callback_id).confirm_reply(self.callback_id)

    @property
    def key(self) -> str:
        return self.settings.keys.callback_home(self.callback_id).confirm(self.callback_id)

    def answered(self, raw: bytes | str) -> UserConfirmation:
        kind, answer = confirmation_from_reply(self.callback_id, raw)
        if kind == "cancelled":
            raise TaskCancelled(self.task_id)
        if self.answer_model is not None and answer.proceed:
            try:
                answer = answer.model_copy(update={"data": self.answer_model.model_validate(answer.data)})
            except ValidationError as exc:
                raise ConfirmationError(
                    f"answer to {self.callback_id} does not fit its model: {exc}"
                ) from None
        return answer

    def answered_events(self, answer: UserConfirmation) -> list[Outgoing]:
        """Told by the waiting side once it has the answer, so it comes before
        anything the task does next (and every open copy of the question closes)."""
        return self._to_everyone(
            lambda user: event(
                "confirmation_answered",
                task_id=self.task_id,
                user_id=user,
                callback_id=self.callback_id,
                proceed=answer.proceed,
                answered_by=answer.answered_by,
            )
        )

    def expired_events(self) -> list[Outgoing]:
        return self._to_everyone(
            lambda user: event(
                "confirmation_expired", task_id=self.task_id, user_id=user, callback_id=self.callback_id
            )
        )

    def closed(self, state: str, answer: bytes | None) -> UserConfirmation | None:
        """What a closed confirmation means: an answer, a default, or an exception;
        None while it is still open."""
        if state == "answered" and answer:
            return self.answered(answer)
        if state == "cancelled":
            raise TaskCancelled(self.task_id)
        if state in ("expired", "closed", "unknown_callback"):
            return self.timed_out()
        return None

    def timed_out(self) -> UserConfirmation:
        if self.default is None:
            raise ConfirmationTimeout(self.callback_id, self.timeout)
        if isinstance(self.default, bool):
            return UserConfirmation(proceed=self.default, callback_id=self.callback_id, timed_out=True)
        return self.default.model_copy(update={"callback_id": self.callback_id, "timed_out": True})
