"""The Redis operations only the server performs: answering, cancelling, and
finding the confirmations a person has yet to answer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio

from ..protocol import with_id
from ..settings import Settings
from ..storage import ANSWER, CANCEL, answer_call, answer_payload, cancel_call, text

__all__ = ["Answered", "ServerStore"]


@dataclass(frozen=True, slots=True)
class Answered:
    """What became of an answer: ``ok``, or why it was refused."""

    outcome: str
    task_id: str | None = None
    owner: str | None = None
    asked_at: float | None = None


class ServerStore:
    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._answer = client.register_script(ANSWER)
        self._cancel = client.register_script(CANCEL)

    async def answer(
        self, callback_id: str, answered_by: str | None, proceed: bool, feedback: str | None
    ) -> Answered:
        keys, args = answer_call(
            self.settings, callback_id, answered_by, answer_payload(proceed, feedback, answered_by)
        )
        outcome, *details = [text(part) for part in await self._answer(keys, args)]
        if outcome != "ok":
            return Answered(outcome or "unknown_callback")
        task_id, owner, asked_at = details
        return Answered("ok", task_id or None, owner, float(asked_at) if asked_at else None)

    async def cancel(self, task_id: str, requested_by: str | None) -> tuple[str, str | None]:
        """Returns ``('ok', owner)`` or ``(refusal, owner or None)``."""
        keys, args = cancel_call(self.settings, task_id, requested_by)
        reply = [text(part) for part in await self._cancel(keys, args)]
        return reply[0] or "not_found", reply[1] if len(reply) > 1 else None

    async def pending_count(self) -> int:
        """Open confirmations across all replicas; forgets ones past their deadline."""
        key, now = self.settings.keys.pending, time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            _, count = await pipe.execute()
        return int(count)

    async def pending_requests(self, user_id: str | None, task_id: str | None) -> list[bytes]:
        """The stored request events of confirmations still open, oldest first."""
        keys = self.settings.keys
        now = time.time()
        sources = ([keys.user_pending(user_id)] if user_id else []) + (
            [keys.task_pending(task_id)] if task_id else []
        )
        callback_ids: dict[bytes, None] = {}
        for key in sources:
            for cid in await self.redis.zrangebyscore(key, now, "+inf"):
                callback_ids[cid] = None
        if not callback_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in callback_ids:
                pipe.hmget(keys.confirm(cid.decode()), "event_id", "event", "state")
            records = await pipe.execute()
        return [
            with_id(event_id, payload)
            for event_id, payload, state in records
            if event_id and payload and state == b"pending"
        ]
