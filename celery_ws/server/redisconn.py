"""Every use of redis-py's raw connection API, behind one door.

The event bus (``bus.py``) reads the stream over one connection of its own,
below redis-py's client: it writes the next ``XREAD`` before routing the
batch it has, and its replies skip the pool and the response callbacks (why
that pays is in ``bus.py``). redis-py does not document that layer, so all of
it lives here, and :func:`missing_internals` (run by
``tests/server/test_library_internals.py`` against a real Redis) names what a
release has moved. What is used:

* ``Redis.connection_pool.make_connection()``: a connection with the client's
  address, credentials, protocol and timeouts, which no pool hands out or
  takes back;
* ``AbstractConnection.connect()`` and ``disconnect()``;
* ``AbstractConnection.send_command(*args)``: write a command without waiting
  for its reply;
* ``AbstractConnection.read_response()``: the next reply, parsed (by hiredis
  when installed) without the client's response callbacks.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.typing import EncodableT

__all__ = ["RawConnection", "missing_internals"]


class RawConnection:
    """One connection to the Redis server of ``client``, spoken to directly:
    commands and replies are paired by the caller, in order."""

    # the two ignores: redis-py leaves make_connection() and connect() unannotated
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._connection: AbstractConnection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]

    async def connect(self) -> None:
        await self._connection.connect()  # type: ignore[no-untyped-call]

    async def send(self, *args: EncodableT) -> None:
        """Write one command; its reply is the next unread :meth:`reply`."""
        await self._connection.send_command(*args)

    async def reply(self) -> Any:
        """The next reply, as the connection's protocol (RESP2 or RESP3) gives it."""
        return await self._connection.read_response()

    async def close(self) -> None:
        await self._connection.disconnect()


_POOL = ("make_connection",)
_CONNECTION = ("connect", "disconnect", "send_command", "read_response")


def missing_internals(client: redis.asyncio.Redis) -> list[str]:
    """The parts of redis-py listed above that ``client`` lacks, each as
    ``Class.attribute``; empty when all are there."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return ["Redis.connection_pool"]
    missing = [f"ConnectionPool.{name}" for name in _POOL if not hasattr(pool, name)]
    if missing:
        return missing
    connection = pool.make_connection()
    return [f"AbstractConnection.{name}" for name in _CONNECTION if not hasattr(connection, name)]
