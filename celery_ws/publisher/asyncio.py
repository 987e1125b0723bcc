"""The asyncio publisher: the server and asyncio web apps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, Unpack

import redis

from ..connections import async_client
from ..deferred import Continuation
from ..protocol import TaskStepResult, UserConfirmation
from ..settings import Settings
from ..storage import EmitResult
from .core import Announce, Commands, Core, Effect, Links, Pause, Pop, Run, Steps, load_settings
from .question import ConfirmOptions, Outgoing
from .workflows import Cancellation, cancel, defer

__all__ = ["AsyncPublisher"]

T = TypeVar("T")


class AsyncPublisher:
    """The asyncio twin of :class:`~celery_ws.Publisher`: the same methods, awaited
    (and ``aclose`` for ``close``); both run the sequences of
    :mod:`celery_ws.publisher.core`, so they cannot drift apart.

    Args:
        announce: a coroutine function storing the events that close a question;
            by default a write before ``notify_user`` returns.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        announce: Callable[[list[Outgoing]], Awaitable[None]] | None = None,
        links: Links | None = None,
    ) -> None:
        self.settings = load_settings(redis_url, settings)
        self._core = Core(self.settings, links)
        self._announce = announce or self._store
        self.redis = async_client(self.settings.redis_url)
        self._blocking = async_client(self.settings.redis_url, blocking=True)
        self._cold = True

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self._blocking.aclose()

    async def emit(self, event: dict[str, Any], *, callback_id: str | None = None) -> EmitResult:
        return await self._run(self._core.emit(event, callback_id))

    async def emit_many(self, events: Iterable[dict[str, Any] | Outgoing]) -> list[EmitResult]:
        return await self._run(self._core.emit_many(events))

    async def broadcast(self, message: dict[str, Any]) -> str | None:
        return await self._run(self._core.send(message, None))

    async def send_to_user(self, user_id: str, message: dict[str, Any]) -> str | None:
        return await self._run(self._core.send(message, user_id))

    async def send_to_task(self, task_id: str, message: dict[str, Any]) -> str | None:
        return await self._run(self._core.send_to_task(task_id, message))

    async def send_with_ack(self, user_id: str, message: dict[str, Any], timeout: float = 5.0) -> bool:
        return await self._run(self._core.send_with_ack(user_id, message, timeout))

    async def owner_of(self, task_id: str) -> str | None:
        return await self._run(self._core.owner_of(task_id))

    async def is_cancelled(self, task_id: str) -> bool:
        return await self._run(self._core.is_cancelled(task_id))

    async def cancelled_by(self, task_id: str) -> str | None:
        return await self._run(self._core.cancelled_by(task_id))

    async def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str | None,
        step: int | None = None,
        **options: Unpack[ConfirmOptions],
    ) -> UserConfirmation:
        return await self._run(self._core.notify_user(step_result, user_id, task_id, step, options))

    async def defer(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str,
        step: int | None = None,
        *,
        continuation: Continuation,
        **options: Unpack[ConfirmOptions],
    ) -> str:
        return await self._run(defer(self._core, step_result, user_id, task_id, step, continuation, options))

    async def cancel(self, task_id: str, by: str | None = None, *, owner_only: bool = False) -> Cancellation:
        return await self._run(cancel(self._core, task_id, by, owner_only=owner_only))

    async def _store(self, outgoing: list[Outgoing]) -> None:
        await self._run(self._core.announce(outgoing))

    async def _warm(self) -> None:
        """Learn a cluster's slots before the first commands: redis-py's asyncio
        cluster client, used by several tasks at once before it knows them, can
        send a command twice (a write stored twice). Once, by the first call of
        any method; a no-op on other clients."""
        if self._cold:
            await self.redis.initialize()
            await self._blocking.initialize()
            self._cold = False

    async def _run(self, steps: Steps[T]) -> T:
        await self._warm()
        run = Run(steps)
        while run.effect is not None:
            try:
                reply = await self._perform(run.effect)
            except redis.RedisError as exc:
                run.throw(exc)
            else:
                run.send(reply)
        return run.result

    async def _perform(self, effect: Effect) -> Any:
        """All the I/O an AsyncPublisher does."""
        match effect:
            case Commands(queue, transaction, raise_on_error):
                async with self.redis.pipeline(transaction=transaction) as pipe:
                    queue(pipe)
                    return await pipe.execute(raise_on_error=raise_on_error)
            case Pop(key, timeout):
                return await self._blocking.blpop([key], timeout=timeout)
            case Pause(seconds):
                await asyncio.sleep(seconds)
            case Announce(outgoing):
                await self._announce(outgoing)
        return None
