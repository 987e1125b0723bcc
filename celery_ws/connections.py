"""Redis clients configured for how celery-ws uses them.

redis-py 8 gives every client a 5 s socket timeout, which turns a blocking read
(``BLPOP`` while a task waits for its person, ``XREAD BLOCK`` in the server) into
a spurious TimeoutError; ``blocking=True`` clients have no socket timeout and
rely on TCP keepalive instead. Clients keep raw bytes: events pass through
the server without being decoded.
"""

from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

__all__ = ["async_client", "sync_client"]


def _options(blocking: bool) -> dict[str, object]:
    return {
        "socket_timeout": None if blocking else 5.0,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3),
    }


def sync_client(url: str, *, blocking: bool = False) -> redis.Redis:
    return redis.Redis.from_url(url, **_options(blocking))


#: a server's Redis connections; requests beyond wait for a free one instead of
#: failing (a burst of subscribes would otherwise hit "Too many connections")
ASYNC_POOL_SIZE = 64
_POOL_WAIT = 10.0


def async_client(url: str, *, blocking: bool = False) -> redis.asyncio.Redis:
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=ASYNC_POOL_SIZE, timeout=_POOL_WAIT, **_options(blocking)
    )
    return redis.asyncio.Redis(connection_pool=pool)
