"""Housekeeping: what the server checks once a second rather than per event.

A task whose worker stopped beating (killed, or its machine died) is reported
to its owner as ``task_failed`` with ``error_code`` ``WorkerLost``; and the
pending-confirmations gauge is refreshed from Redis, so that the synchronous
``get_status()`` can read it without a round trip. A replica that sends
continuations renews its registration and sends those that are due: deferred
questions answered through a replica without the app, expired ones, and
those whose claim ran out (its replica died before sending).
"""

from __future__ import annotations

import asyncio
import contextlib

import redis

from ..protocol import event
from ..publisher import AsyncPublisher
from .continuations import Continuer
from .metrics import Metrics
from .store import ServerStore

__all__ = ["Housekeeping"]

_INTERVAL = 1.0


class Housekeeping:
    def __init__(
        self,
        store: ServerStore,
        publisher: AsyncPublisher,
        metrics: Metrics,
        continuer: Continuer | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.continuer = continuer

    async def run(self, stopping: asyncio.Event) -> None:
        """Once a second until ``stopping`` is set; a Redis outage skips a round."""
        while not stopping.is_set():
            if self.continuer is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    await self.continuer.register()
                    await self.continuer.sweep()
            with contextlib.suppress(redis.RedisError, OSError):
                await self.report_lost_tasks()
                self.metrics.pending_confirmations.set(await self.store.pending_count())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), _INTERVAL)

    async def report_lost_tasks(self) -> None:
        """A task whose lease ran out lost its worker. Every replica may report
        it: only the first terminal event counts."""
        for home, task_id, lease_end in await self.store.expired_leases():
            owner, links = await self.store.task_links(home, task_id)
            lost = event(
                "task_failed",
                task_id=task_id,
                user_id=owner,
                error_code="WorkerLost",
                error_message="the worker stopped sending heartbeats: the task is lost",
                lease_expired_at=lease_end,
                **links,
            )
            if (await self.publisher.emit(lost)).id is None:
                await self.store.forget_lease(home, task_id)
