"""Continuations: turning an answered (or expired) deferred question into a
Celery message, without a worker waiting for it.

Only a replica that knows the Celery app (``celery-ws serve --app``) sends
them. It registers in Redis (``cws:continuers``, refreshed every second by
housekeeping, lapsing after a few seconds), so ``ask()`` can refuse when none
runs.

Sent at least once, run at most once. A replica claims a question's
continuation for ``continuation_lease`` seconds (``claim.lua``, atomic; the
replica that takes the answer claims it in the same step), stores the events
that close the question (``confirmation_answered`` or ``confirmation_expired``,
then ``task_continued``), sends the task with its pre-assigned id, and records
it sent. A replica killed between its claim and the send leaves the claim to
run out; the housekeeping of any replica with the app claims it again and
sends. So a message can go out twice (a replica killed after the send, before
recording it), never zero times; the worker that runs a continuation first
claims its id (``SET NX``) and a second run of the same id is skipped.

``CELERY_WS_TEST_PAUSE_AFTER_CLAIM`` (seconds; a test hook, read only here)
pauses a replica between its claim and the send, so a test can kill it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis
import redis.asyncio

from ..deferred import Claimed, ContinuationMessage, claim_call
from ..protocol import event
from ..publisher import AsyncPublisher, Outgoing
from ..settings import Settings
from ..storage import CLAIM, text
from .store import due

__all__ = ["Continuer", "SendTask", "celery_sender"]

logger = logging.getLogger(__name__)

#: Sends a continuation through Celery: ``app.send_task`` in a thread.
SendTask = Callable[[ContinuationMessage], Awaitable[None]]

#: seconds a replica's registration lasts unless housekeeping renews it
REGISTRATION_TTL: Final = 5.0
#: questions claimed per housekeeping round, at most
_SWEEP: Final = 100
_PAUSE_HOOK: Final = "CELERY_WS_TEST_PAUSE_AFTER_CLAIM"


def celery_sender(app: Any) -> SendTask:
    """How a replica with the Celery ``app`` sends a continuation: by name (the
    server need not import the task), with Celery's JSON serializer."""

    async def send(message: ContinuationMessage) -> None:
        await asyncio.to_thread(
            app.send_task,
            message.name,
            args=message.args,
            kwargs=message.kwargs,
            task_id=message.task_id,
            headers=message.headers,
            serializer="json",
            **message.options,
        )

    return send


class Continuer:
    """Claims and sends the continuations of deferred questions for one replica."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        settings: Settings,
        publisher: AsyncPublisher,
        send: SendTask,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.publisher = publisher
        self.send = send
        #: this replica, as recorded on the questions it claims
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claim = client.register_script(CLAIM)
        self._pause = float(os.environ.get(_PAUSE_HOOK) or 0)
        self._running: set[asyncio.Task[bool]] = set()
        #: continuations this replica sent (a repeat after a lost claim included)
        self.sent = 0

    # -- registration -------------------------------------------------------------------

    async def register(self) -> None:
        """Say (again) that this replica can send continuations; forget lapsed ones."""
        key, now = self.settings.keys.continuers, time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {self.replica: now + REGISTRATION_TTL})
            pipe.zremrangebyscore(key, "-inf", now)
            await pipe.execute()

    async def unregister(self) -> None:
        await self.redis.zrem(self.settings.keys.continuers, self.replica)

    # -- sending ------------------------------------------------------------------------

    def kick(self, callback_id: str) -> None:
        """Continue a question this replica just took the answer to, in the background."""
        task = asyncio.create_task(self._continue(callback_id), name=f"celery-ws-continue-{callback_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def sweep(self) -> int:
        """Continue every question that is due: answered or expired, and not
        claimed by a live replica. Returns how many this replica sent."""
        sent = 0
        for _, callback_id, _ in await due(self.redis, self.settings, lambda home: home.deferred, _SWEEP):
            if await self._continue(callback_id):
                sent += 1
        return sent

    async def _continue(self, callback_id: str) -> bool:
        """:meth:`continue_one`, with any error logged: one broken question must
        not stop the others, nor housekeeping."""
        try:
            return await self.continue_one(callback_id)
        except redis.RedisError as exc:
            logger.warning("cannot continue question %s now (%s); retrying", callback_id, exc)
        except Exception:
            logger.exception("cannot continue question %s; retrying once its claim runs out", callback_id)
        return False

    async def continue_one(self, callback_id: str) -> bool:
        """Claim, announce, send, record. False when there was nothing to send
        here, or the send failed (the claim then runs out and it is tried again)."""
        home = self.settings.keys.callback_home(callback_id)
        try:
            continuation_id = text(await self.redis.hget(home.confirm(callback_id), "continuation_id"))
            claim_keys, args = claim_call(self.settings, callback_id, continuation_id, self.replica)
            claimed = Claimed.from_reply(callback_id, await self._claim(claim_keys, args))
            if claimed is None:
                return False
            if not claimed.announced:
                await self.publisher.emit_many(_closing_events(claimed))
                await self.redis.hset(home.confirm(callback_id), "announced", "1")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("cannot continue question %s now (%s); retrying", callback_id, exc)
            return False
        if self._pause:
            logger.warning(
                "test hook %s: pausing %.1f s after claiming %s", _PAUSE_HOOK, self._pause, callback_id
            )
            await asyncio.sleep(self._pause)
        try:
            await self.send(claimed.message())
        except Exception:
            logger.exception(
                "sending the continuation of %s failed; it is sent again once the claim runs out", callback_id
            )
            return False
        self.sent += 1
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(home.confirm(callback_id), "sent", repr(time.time()))
                pipe.zrem(home.deferred, callback_id)
                await pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            logger.warning("continuation of %s sent but not recorded: it may be sent again", callback_id)
        return True

    async def stop(self) -> None:
        """Let continuations being sent finish (briefly), and unregister."""
        if self._running:
            await asyncio.wait(self._running, timeout=self.settings.continuation_lease)
        with contextlib.suppress(redis.RedisError, OSError):  # else it lapses on its own
            await self.unregister()


def _closing_events(claimed: Claimed) -> list[Outgoing]:
    """What the owner and each assignee are told: the question closed (answered
    or expired), then, on the task that asked, that its workflow continues."""
    links = claimed.links()
    answer = claimed.answer or {}
    people = list(dict.fromkeys([claimed.owner, *claimed.assignees]))
    closing = [
        Outgoing(
            event(
                "confirmation_expired" if claimed.timed_out else "confirmation_answered",
                task_id=claimed.task_id,
                user_id=user,
                callback_id=claimed.callback_id,
                **(
                    {}
                    if claimed.timed_out
                    else {"proceed": answer.get("proceed"), "answered_by": answer.get("answered_by")}
                ),
                **links,
            ),
            route_by_task=user == claimed.owner,
        )
        for user in people
    ]
    continued = event(
        "task_continued",
        task_id=claimed.task_id,
        user_id=claimed.owner,
        callback_id=claimed.callback_id,
        continuation_id=claimed.continuation_id,
        timed_out=claimed.timed_out,
        **links,
    )
    return [*closing, Outgoing(continued)]
