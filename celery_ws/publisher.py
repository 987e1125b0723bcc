"""Send events and ask questions from any process: a web app, a script, a task.

Like python-socketio's write-only managers, a publisher never talks to a
WebSocket: it writes to Redis, and every ``celery-ws serve`` replica delivers
from there. :class:`Publisher` is for synchronous code, :class:`AsyncPublisher`
for asyncio code; they differ only in ``await``.

Waiting for an answer survives Redis restarts and failovers: the question and
its answer live in Redis, so a wait that loses its connection reconnects with
backoff, reads what happened meanwhile and keeps its deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import redis
from pydantic import BaseModel, ValidationError
from redis.exceptions import NoScriptError

from .connections import async_client, sync_client
from .exceptions import ConfirmationError, ConfirmationTimeout, TaskCancelled
from .protocol import TaskStepResult, UserConfirmation, event, message_event, step_result_event
from .settings import Settings
from .storage import (
    EMIT,
    EXPIRE,
    Call,
    EmitResult,
    confirmation_from_reply,
    emit_call,
    expire_call,
    open_confirmation,
    pipelined,
    text,
)

__all__ = ["AsyncPublisher", "Default", "Outgoing", "Publisher"]

#: What a timed-out confirmation returns: an answer, a bare proceed flag, or
#: None to raise :class:`~celery_ws.ConfirmationTimeout`.
Default = UserConfirmation | bool | None

_MIN_BLOCK = 0.01  # BLPOP treats 0 as "forever"; never ask for less than this
_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
_CLOSE_GRACE = 30.0  # how long past its deadline a wait keeps trying to record the timeout


class Outgoing(NamedTuple):
    """An event to store, with how :func:`~celery_ws.storage.emit_call` routes it."""

    event: dict[str, Any]
    route_by_task: bool = True
    callback_id: str | None = None


def _calls(settings: Settings, outgoing: list[Outgoing]) -> list[Call]:
    return [emit_call(settings, out.event, route_by_task=out.route_by_task, callback_id=out.callback_id)
            for out in outgoing]


class _Question:
    """One confirmation request: everything both publishers need, no I/O."""

    def __init__(self, settings: Settings, step_result: TaskStepResult, owner: str, task_id: str | None,
                 step: int | None, timeout: float | None, default: Default, assignees: list[str] | None,
                 answer_model: type[BaseModel] | None) -> None:
        self.settings = settings
        self.callback_id = uuid.uuid4().hex
        self.timeout = settings.callback_timeout if timeout is None else timeout
        self.deadline = time.time() + self.timeout
        self.owner, self.task_id, self.step = owner, task_id, step
        self.default = default
        self.assignees = list(dict.fromkeys(assignees or [owner]))
        self.answer_model = answer_model
        self.schema = answer_model.model_json_schema() if answer_model is not None else None
        self.step_result = step_result

    def open(self, pipe: Any) -> None:
        open_confirmation(pipe, self.settings, self.callback_id, owner=self.owner, task_id=self.task_id,
                          step=self.step, assignees=self.assignees, deadline=self.deadline, schema=self.schema)

    def _to_everyone(self, build: Callable[[str], dict[str, Any]], *, keep_request: bool = False) -> list[Outgoing]:
        """An event for the owner (stored with the task's history) and a copy for
        each other assignee, who does not otherwise see the owner's events."""
        return [Outgoing(build(user), route_by_task=user == self.owner,
                         callback_id=self.callback_id if keep_request and user == self.owner else None)
                for user in dict.fromkeys([self.owner, *self.assignees])]

    def requests(self) -> list[Outgoing]:
        return self._to_everyone(lambda user: step_result_event(
            self.step_result, task_id=self.task_id, user_id=user, step=self.step, callback_id=self.callback_id,
            answer_schema=self.schema), keep_request=True)

    @property
    def remaining(self) -> float:
        return self.deadline - time.time()

    @property
    def reply_key(self) -> str:
        return self.settings.keys.confirm_reply(self.callback_id)

    def answered(self, raw: bytes | str) -> UserConfirmation:
        kind, answer = confirmation_from_reply(self.callback_id, raw)
        if kind == "cancelled":
            raise TaskCancelled(self.task_id)
        if self.answer_model is not None and answer.proceed:
            try:
                answer = answer.model_copy(update={"data": self.answer_model.model_validate(answer.data)})
            except ValidationError as exc:
                raise ConfirmationError(f"answer to {self.callback_id} does not fit its model: {exc}") from None
        return answer

    def answered_events(self, answer: UserConfirmation) -> list[Outgoing]:
        """Told by the waiting side once it has the answer, so it comes before
        anything the task does next (and every open copy of the question closes)."""
        return self._to_everyone(lambda user: event(
            "confirmation_answered", task_id=self.task_id, user_id=user, callback_id=self.callback_id,
            proceed=answer.proceed, answered_by=answer.answered_by))

    def expired_events(self) -> list[Outgoing]:
        return self._to_everyone(lambda user: event(
            "confirmation_expired", task_id=self.task_id, user_id=user, callback_id=self.callback_id))

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


def _settings(redis_url: str | None, settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    return Settings.load(**({"redis_url": redis_url} if redis_url else {}))


class Publisher:
    """Synchronous publisher; safe to share between threads, fork-safe.

    Args:
        announce: how to store the events that close a question
            (``confirmation_answered``/``confirmation_expired``); by default a
            write before ``notify_user`` returns. A worker queues them on its
            emitter instead, so ``confirm_step()`` returns as soon as the answer
            is in, and they still precede whatever the task emits next.
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 announce: Callable[[list[Outgoing]], None] | None = None) -> None:
        self.settings = _settings(redis_url, settings)
        self._announce = announce or self._emit_all
        self.redis = sync_client(self.settings.redis_url)
        self._blocking = sync_client(self.settings.redis_url, blocking=True)
        self._emit = self.redis.register_script(EMIT)
        self._expire = self.redis.register_script(EXPIRE)

    def close(self) -> None:
        self.redis.close()
        self._blocking.close()

    def emit(self, event: dict[str, Any], *, callback_id: str | None = None) -> EmitResult:
        keys, args = emit_call(self.settings, event, callback_id=callback_id)
        return EmitResult.from_reply(self._emit(keys, args))

    def emit_many(self, events: Iterable[dict[str, Any]]) -> list[EmitResult]:
        """Store many events in one round trip, in order."""
        return self._emit_calls([emit_call(self.settings, item) for item in events])

    def _emit_calls(self, calls: list[Call]) -> list[EmitResult]:
        try:
            return self._emit_pipelined(calls)
        except NoScriptError:  # Redis restarted or flushed its scripts; none of these ran
            self._emit.sha = self.redis.script_load(EMIT)
            return self._emit_pipelined(calls)

    def _emit_pipelined(self, calls: list[Call]) -> list[EmitResult]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipelined(pipe, self._emit, calls)
            return [EmitResult.from_reply(reply) for reply in pipe.execute()]

    def broadcast(self, message: dict[str, Any]) -> str | None:
        """Send to every connection; returns the event id."""
        return self.emit(message_event(message, user_id=None)).id

    def send_to_user(self, user_id: str, message: dict[str, Any]) -> str | None:
        return self.emit(message_event(message, user_id=user_id)).id

    def send_to_task(self, task_id: str, message: dict[str, Any]) -> str | None:
        """Send to the task's owner and to whoever watches the task."""
        return self.emit(message_event(message, user_id=self.owner_of(task_id), task_id=task_id)).id

    def send_with_ack(self, user_id: str, message: dict[str, Any], timeout: float = 5.0) -> bool:
        """Send to ``user_id`` and wait until one of their connections, on any
        replica, acknowledges it: True, or False after ``timeout``."""
        message_id = uuid.uuid4().hex
        keys = self.settings.keys
        self.redis.set(keys.ack(message_id), user_id, ex=int(timeout) + 60)
        self.emit(message_event({**message, "message_id": message_id, "requires_ack": True}, user_id=user_id))
        return self._blocking.blpop([keys.ack_list(message_id)], timeout=max(timeout, _MIN_BLOCK)) is not None

    def owner_of(self, task_id: str) -> str | None:
        return text(self.redis.hget(self.settings.keys.task(task_id), "owner"))

    def is_cancelled(self, task_id: str) -> bool:
        return bool(self.redis.hexists(self.settings.keys.task(task_id), "cancel"))

    def cancelled_by(self, task_id: str) -> str | None:
        """Who cancelled the task (None: nobody, or an anonymous open-mode client)."""
        return text(self.redis.hget(self.settings.keys.task(task_id), "cancelled_by")) or None

    def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str | None,
        step: int | None = None,
        *,
        timeout: float | None = None,
        default: Default = None,
        assignees: list[str] | None = None,
        answer_model: type[BaseModel] | None = None,
    ) -> UserConfirmation:
        """Show ``step_result`` to ``user_id`` and block until they answer.

        Args:
            answer_model: a pydantic model the answer's ``data`` must fit; its
                JSON Schema goes with the question so a page can render a form.

        Raises:
            ConfirmationTimeout: nobody answered within ``timeout`` and no
                ``default`` was given.
            TaskCancelled: the task was cancelled while waiting.
        """
        question = _Question(self.settings, step_result, user_id, task_id, step, timeout, default,
                             assignees, answer_model)
        self._retrying(question, self._ask)
        return self._wait(question)

    def _ask(self, question: _Question) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            question.open(pipe)
            pipe.execute()
        self._emit_all(question.requests())

    def _emit_all(self, outgoing: list[Outgoing]) -> None:
        self._emit_calls(_calls(self.settings, outgoing))

    def _wait(self, question: _Question) -> UserConfirmation:
        while question.remaining > 0:
            try:
                popped = self._blocking.blpop([question.reply_key], timeout=max(question.remaining, _MIN_BLOCK))
            except _REDIS_DOWN:
                # Redis restarted or failed over: was it answered meanwhile?
                confirm_key = self.settings.keys.confirm(question.callback_id)
                state, answer = self._retrying(
                    question, lambda q: self.redis.hmget(confirm_key, "state", "answer"))  # noqa: B023
                decided = question.closed(text(state) or "unknown_callback", answer)
                if decided is not None:
                    return decided
                continue
            if popped is not None:
                answer = question.answered(popped[1])
                answered = question.answered_events(answer)
                self._retrying(question, lambda q: self._announce(answered), past_deadline=True)  # noqa: B023
                return answer
        keys, args = expire_call(self.settings, question.callback_id)
        state, *rest = self._retrying(question, lambda q: self._expire(keys, args), past_deadline=True)
        if text(state) == "expired":
            self._announce(question.expired_events())
        return question.closed(text(state) or "expired", rest[0] if rest else None) or question.timed_out()

    def _retrying(self, question: _Question, operation: Any, *, past_deadline: bool = False) -> Any:
        """Run ``operation(question)``, retrying while Redis is unreachable and the
        question's deadline (plus a grace period to close it) has not passed."""
        backoff = _BACKOFF_START
        while True:
            try:
                return operation(question)
            except _REDIS_DOWN:
                if question.remaining < (-_CLOSE_GRACE if past_deadline else 0):
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)


class AsyncPublisher:
    """The asyncio twin of :class:`Publisher`."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = _settings(redis_url, settings)
        self.redis = async_client(self.settings.redis_url)
        self._blocking = async_client(self.settings.redis_url, blocking=True)
        self._emit = self.redis.register_script(EMIT)
        self._expire = self.redis.register_script(EXPIRE)

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self._blocking.aclose()

    async def emit(self, event: dict[str, Any], *, callback_id: str | None = None) -> EmitResult:
        keys, args = emit_call(self.settings, event, callback_id=callback_id)
        return EmitResult.from_reply(await self._emit(keys, args))

    async def broadcast(self, message: dict[str, Any]) -> str | None:
        return (await self.emit(message_event(message, user_id=None))).id

    async def send_to_user(self, user_id: str, message: dict[str, Any]) -> str | None:
        return (await self.emit(message_event(message, user_id=user_id))).id

    async def send_to_task(self, task_id: str, message: dict[str, Any]) -> str | None:
        owner = await self.owner_of(task_id)
        return (await self.emit(message_event(message, user_id=owner, task_id=task_id))).id

    async def send_with_ack(self, user_id: str, message: dict[str, Any], timeout: float = 5.0) -> bool:
        message_id = uuid.uuid4().hex
        keys = self.settings.keys
        await self.redis.set(keys.ack(message_id), user_id, ex=int(timeout) + 60)
        await self.emit(message_event({**message, "message_id": message_id, "requires_ack": True}, user_id=user_id))
        return await self._blocking.blpop([keys.ack_list(message_id)], timeout=max(timeout, _MIN_BLOCK)) is not None

    async def owner_of(self, task_id: str) -> str | None:
        return text(await self.redis.hget(self.settings.keys.task(task_id), "owner"))

    async def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str | None,
        step: int | None = None,
        *,
        timeout: float | None = None,
        default: Default = None,
        assignees: list[str] | None = None,
        answer_model: type[BaseModel] | None = None,
    ) -> UserConfirmation:
        question = _Question(self.settings, step_result, user_id, task_id, step, timeout, default,
                             assignees, answer_model)
        await self._retrying(question, self._ask)
        return await self._wait(question)

    async def _ask(self, question: _Question) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            question.open(pipe)
            await pipe.execute()
        await self._emit_all(question.requests())

    async def _emit_all(self, outgoing: list[Outgoing]) -> None:
        for keys, args in _calls(self.settings, outgoing):
            await self._emit(keys, args)

    async def _wait(self, question: _Question) -> UserConfirmation:
        confirm_key = self.settings.keys.confirm(question.callback_id)

        async def read_state(q: _Question) -> Any:
            return await self.redis.hmget(confirm_key, "state", "answer")

        while question.remaining > 0:
            try:
                popped = await self._blocking.blpop([question.reply_key],
                                                    timeout=max(question.remaining, _MIN_BLOCK))
            except _REDIS_DOWN:
                state, raw = await self._retrying(question, read_state)
                decided = question.closed(text(state) or "unknown_callback", raw)
                if decided is not None:
                    return decided
                continue
            if popped is not None:
                answer = question.answered(popped[1])
                events = question.answered_events(answer)

                async def emit_answered(q: _Question, answered: list[Outgoing] = events) -> None:
                    await self._emit_all(answered)

                await self._retrying(question, emit_answered, past_deadline=True)
                return answer
        keys, args = expire_call(self.settings, question.callback_id)

        async def expire(q: _Question) -> Any:
            return await self._expire(keys, args)

        state, *rest = await self._retrying(question, expire, past_deadline=True)
        if text(state) == "expired":
            await self._emit_all(question.expired_events())
        return question.closed(text(state) or "expired", rest[0] if rest else None) or question.timed_out()

    async def _retrying(self, question: _Question, operation: Any, *, past_deadline: bool = False) -> Any:
        """:meth:`Publisher._retrying`, awaiting."""
        backoff = _BACKOFF_START
        while True:
            try:
                return await operation(question)
            except _REDIS_DOWN:
                if question.remaining < (-_CLOSE_GRACE if past_deadline else 0):
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
