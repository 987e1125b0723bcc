"""Send events and ask questions from any process: a web app, a script, a task.

Like python-socketio's write-only managers, a publisher never talks to a
WebSocket: it writes to Redis, and every ``celery-ws serve`` replica delivers
from there. :class:`Publisher` is for synchronous code, :class:`AsyncPublisher`
for asyncio code; they differ only in ``await``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from .connections import async_client, sync_client
from .exceptions import ConfirmationTimeout, TaskCancelled
from .protocol import TaskStepResult, UserConfirmation, event, message_event, step_result_event
from .settings import Settings
from .storage import (
    EMIT,
    EXPIRE,
    EmitResult,
    confirmation_from_reply,
    emit_call,
    expire_call,
    open_confirmation,
    text,
)

__all__ = ["AsyncPublisher", "Default", "Publisher"]

#: What a timed-out confirmation returns: an answer, a bare proceed flag, or
#: None to raise :class:`~celery_ws.ConfirmationTimeout`.
Default = UserConfirmation | bool | None

_MIN_BLOCK = 0.01  # BLPOP treats 0 as "forever"; never ask for less than this


def _settings(redis_url: str | None, settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    return Settings.load(**({"redis_url": redis_url} if redis_url else {}))


def _ask(settings: Settings, timeout: float | None) -> tuple[str, float, float]:
    """A new callback id, its deadline and the timeout that applies."""
    timeout = settings.callback_timeout if timeout is None else timeout
    return uuid.uuid4().hex, time.time() + timeout, timeout


def _on_timeout(callback_id: str, timeout: float, default: Default) -> UserConfirmation:
    if default is None:
        raise ConfirmationTimeout(callback_id, timeout)
    if isinstance(default, bool):
        return UserConfirmation(proceed=default, callback_id=callback_id, timed_out=True)
    return default.model_copy(update={"callback_id": callback_id, "timed_out": True})


def _finish(kind: str, answer: UserConfirmation, task_id: str | None) -> UserConfirmation:
    if kind == "cancelled":
        raise TaskCancelled(task_id)
    return answer


def _requests(
    step_result: TaskStepResult, owner: str, task_id: str | None, step: int | None,
    callback_id: str, assignees: list[str] | None,
) -> list[tuple[dict[str, Any], bool]]:
    """The question for its owner (stored with the task's history) and a copy for
    each other assignee, who does not otherwise see the owner's events."""
    events = [(step_result_event(step_result, task_id=task_id, user_id=owner, step=step,
                                 callback_id=callback_id), True)]
    for user in dict.fromkeys(assignees or ()):
        if user != owner:
            copy = step_result_event(step_result, task_id=task_id, user_id=user, step=step, callback_id=callback_id)
            events.append((copy, False))
    return events


def _expired_event(callback_id: str, task_id: str | None, user_id: str) -> dict[str, Any]:
    return event("confirmation_expired", task_id=task_id, user_id=user_id, callback_id=callback_id)


class Publisher:
    """Synchronous publisher; safe to share between threads, fork-safe."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = _settings(redis_url, settings)
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
        with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                keys, args = emit_call(self.settings, event)
                self._emit(keys, args, client=pipe)
            return [EmitResult.from_reply(reply) for reply in pipe.execute()]

    def broadcast(self, message: dict[str, Any]) -> str | None:
        """Send to every connection; returns the event id."""
        return self.emit(message_event(message, user_id=None)).id

    def send_to_user(self, user_id: str, message: dict[str, Any]) -> str | None:
        return self.emit(message_event(message, user_id=user_id)).id

    def send_to_task(self, task_id: str, message: dict[str, Any]) -> str | None:
        """Send to the task's owner and to whoever watches the task."""
        return self.emit(message_event(message, user_id=self.owner_of(task_id), task_id=task_id)).id

    def owner_of(self, task_id: str) -> str | None:
        return text(self.redis.hget(self.settings.keys.task(task_id), "owner"))

    def is_cancelled(self, task_id: str) -> bool:
        return bool(self.redis.hexists(self.settings.keys.task(task_id), "cancel"))

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
    ) -> UserConfirmation:
        """Show ``step_result`` to ``user_id`` and block until they answer.

        Raises:
            ConfirmationTimeout: nobody answered within ``timeout`` and no
                ``default`` was given.
            TaskCancelled: the task was cancelled while waiting.
        """
        callback_id, deadline, timeout = _ask(self.settings, timeout)
        with self.redis.pipeline(transaction=True) as pipe:
            open_confirmation(
                pipe, self.settings, callback_id, owner=user_id, task_id=task_id, step=step,
                assignees=assignees or [user_id], deadline=deadline,
            )
            pipe.execute()
        for request, routed in _requests(step_result, user_id, task_id, step, callback_id, assignees):
            keys, args = emit_call(self.settings, request, callback_id=callback_id if routed else None,
                                   route_by_task=routed)
            self._emit(keys, args)
        return self.wait_for_answer(callback_id, deadline, timeout=timeout, default=default, task_id=task_id, user_id=user_id)

    def wait_for_answer(
        self,
        callback_id: str,
        deadline: float,
        *,
        timeout: float,
        default: Default,
        task_id: str | None,
        user_id: str,
    ) -> UserConfirmation:
        reply_key = self.settings.keys.confirm_reply(callback_id)
        remaining = deadline - time.time()
        while remaining > 0:
            popped = self._blocking.blpop([reply_key], timeout=max(remaining, _MIN_BLOCK))
            if popped is not None:
                return _finish(*confirmation_from_reply(callback_id, popped[1]), task_id)
            remaining = deadline - time.time()
        keys, args = expire_call(self.settings, callback_id)
        state, *rest = self._expire(keys, args)
        if text(state) == "expired":
            self.emit(_expired_event(callback_id, task_id, user_id))
            return _on_timeout(callback_id, timeout, default)
        if text(state) == "cancelled":
            raise TaskCancelled(task_id)
        return confirmation_from_reply(callback_id, rest[0])[1]  # answered as time ran out


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
    ) -> UserConfirmation:
        callback_id, deadline, timeout = _ask(self.settings, timeout)
        async with self.redis.pipeline(transaction=True) as pipe:
            open_confirmation(
                pipe, self.settings, callback_id, owner=user_id, task_id=task_id, step=step,
                assignees=assignees or [user_id], deadline=deadline,
            )
            await pipe.execute()
        for request, routed in _requests(step_result, user_id, task_id, step, callback_id, assignees):
            keys, args = emit_call(self.settings, request, callback_id=callback_id if routed else None,
                                   route_by_task=routed)
            await self._emit(keys, args)
        return await self.wait_for_answer(callback_id, deadline, timeout=timeout, default=default, task_id=task_id, user_id=user_id)

    async def wait_for_answer(
        self,
        callback_id: str,
        deadline: float,
        *,
        timeout: float,
        default: Default,
        task_id: str | None,
        user_id: str,
    ) -> UserConfirmation:
        reply_key = self.settings.keys.confirm_reply(callback_id)
        remaining = deadline - time.time()
        while remaining > 0:
            popped = await self._blocking.blpop([reply_key], timeout=max(remaining, _MIN_BLOCK))
            if popped is not None:
                return _finish(*confirmation_from_reply(callback_id, popped[1]), task_id)
            remaining = deadline - time.time()
        keys, args = expire_call(self.settings, callback_id)
        state, *rest = await self._expire(keys, args)
        if text(state) == "expired":
            await self.emit(_expired_event(callback_id, task_id, user_id))
            return _on_timeout(callback_id, timeout, default)
        if text(state) == "cancelled":
            raise TaskCancelled(task_id)
        return confirmation_from_reply(callback_id, rest[0])[1]
