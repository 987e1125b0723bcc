"""Reads the global event stream and hands each event to the router.

Every replica reads the whole stream (no consumer group: each replica needs
every event for its own sockets) and remembers the last id it read, so a Redis
blip or reconnect resumes where it stopped instead of losing what was published
meanwhile, which plain pub/sub would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis
import redis.asyncio

__all__ = ["EventBus", "StreamEntry"]

logger = logging.getLogger(__name__)

#: (event id, payload JSON without id, owner or b"", task id or b"", type)
StreamEntry = tuple[bytes, bytes, bytes, bytes, bytes]

_BLOCK_MS = 1000
_COUNT = 1000
_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0


class EventBus:
    def __init__(self, client: redis.asyncio.Redis, stream: str, deliver: Callable[[list[StreamEntry]], None],
                 on_reconnect: Callable[[], None]) -> None:
        self._redis = client
        self._stream = stream
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self.last_id: bytes | None = None
        self.connected = False

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = _BACKOFF_START
        while not stopping.is_set():
            try:
                if self.last_id is None:
                    newest = await self._redis.xrevrange(self._stream, count=1)
                    self.last_id = newest[0][0] if newest else b"0-0"
                self.connected = True
                reply = await self._redis.xread({self._stream: self.last_id}, block=_BLOCK_MS, count=_COUNT)
                backoff = _BACKOFF_START
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if self.connected:
                    logger.warning("lost Redis (%s); reconnecting", exc)
                self.connected = False
                self._on_reconnect()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            if not reply:
                continue
            entries = reply[0][1]
            self.last_id = entries[-1][0]
            batch = [
                (entry_id, fields[b"d"], fields.get(b"u", b""), fields.get(b"t", b""), fields.get(b"y", b""))
                for entry_id, fields in entries
            ]
            try:
                self._deliver(batch)
            except Exception:  # a routing bug must not stop delivery to everyone else
                logger.exception("failed to deliver %d events", len(batch))
