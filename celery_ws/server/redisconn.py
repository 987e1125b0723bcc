"""Every use of redis-py's raw connection API, behind one door.

The event bus (``bus.py``) reads its pub/sub messages over connections of
its own (one, or one per cluster node: ``subscriber.py``), below redis-py's
client, and answers go to Redis through a
:class:`CommandLane`: both skip the pool (its health probe of the socket before
each command costs an extra turn of the event loop) and the response
callbacks. redis-py does not document that layer, so all of
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
  when installed) without the client's response callbacks;
* ``AbstractConnection._parser._reader``: hiredis' reader, whose ``gets()``
  returns the next reply it already holds, or ``NOT_ENOUGH_DATA`` (from
  ``redis._parsers.hiredis``).

On Redis Cluster (``redis.asyncio.cluster.RedisCluster``):

* ``ClusterNode.connection_class`` and ``ClusterNode.connection_kwargs``: a
  connection to one node with the client's credentials and timeouts, made as
  the node's own pool makes one (``acquire_connection()``), outside that pool;
* ``RedisCluster.nodes_manager.initialize()``: ask the cluster again which
  node serves which slot (the client's public ``initialize()`` does it once).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio
import redis.asyncio.cluster
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT

__all__ = ["CommandLane", "RawConnection", "missing_internals", "refresh_slots"]


class RawConnection:
    """One connection to the Redis server of a standalone or Sentinel client,
    or to one node of a cluster, spoken to directly: commands and replies are
    paired by the caller, in order."""

    # the ignores: redis-py leaves make_connection() and connect() unannotated
    def __init__(self, server: redis.asyncio.Redis | ClusterNode) -> None:
        if isinstance(server, ClusterNode):
            # like the node's pool, no retries inside connect(): the caller
            # decides, after asking the cluster where the slots went
            options = {**server.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            self._connection: AbstractConnection = server.connection_class(**options)
        else:
            self._connection = server.connection_pool.make_connection()  # type: ignore[no-untyped-call]

    async def connect(self) -> None:
        await self._connection.connect()  # type: ignore[no-untyped-call]

    async def send(self, *args: EncodableT) -> None:
        """Write one command; its reply is the next unread :meth:`reply`."""
        await self._connection.send_command(*args)

    async def reply(self) -> Any:
        """The next reply, as the connection's protocol (RESP2 or RESP3) gives it."""
        return await self._connection.read_response()

    def buffered(self) -> list[Any]:
        """The replies already read from the socket and parsed, without waiting:
        a subscriber takes a burst of messages in one turn of the event loop
        instead of one ``read_response()`` each. Empty without hiredis. An
        error reply is in its place as its exception (``redis.ResponseError``),
        not raised: the replies around it are taken from the reader already."""
        reader = getattr(getattr(self._connection, "_parser", None), "_reader", None)
        replies: list[Any] = []
        while reader is not None and len(replies) < _BUFFERED_MAX:
            reply = reader.gets()
            if reply is False or reply is NOT_ENOUGH_DATA:
                break
            replies.append(reply)
        return replies

    async def close(self) -> None:
        await self._connection.disconnect()


#: replies taken without waiting in one turn of the event loop, at most
_BUFFERED_MAX = 10_000


class CommandLane:
    """Commands on one connection of its own, one round trip at a time: for the
    request a person waits on (an answer: ``confirm_step()`` wakes when it is
    stored), the shortest way to Redis. A connection that fails is replaced,
    and the command sent once more on the new one (a connection found dead
    after Redis restarted)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._connection: RawConnection | None = None
        self._lock = asyncio.Lock()

    async def call(self, *args: EncodableT) -> Any:
        async with self._lock:
            try:
                return await self._round_trip(args)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                await self._drop()
                return await self._round_trip(args)

    async def _round_trip(self, args: tuple[EncodableT, ...]) -> Any:
        if self._connection is None:
            connection = RawConnection(self._client)
            await connection.connect()
            self._connection = connection
        try:
            await self._connection.send(*args)
            return await self._connection.reply()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            await self._drop()
            raise

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


async def refresh_slots(client: redis.asyncio.cluster.RedisCluster) -> None:
    """Learn again which node of ``client``'s cluster serves which slot (after
    a failover, or Redis saying a slot moved). Concurrent calls share one."""
    await client.nodes_manager.initialize()


_POOL = ("make_connection",)
_CONNECTION = ("connect", "disconnect", "send_command", "read_response", "_parser")
_NODE = ("connection_class", "connection_kwargs")


def missing_internals(client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster) -> list[str]:
    """The parts of redis-py listed above that ``client`` (a standalone,
    Sentinel or cluster client) lacks, each as ``Class.attribute``; empty when
    all are there."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        nodes = getattr(client, "nodes_manager", None)
        if not callable(getattr(nodes, "initialize", None)):
            return ["RedisCluster.nodes_manager.initialize"]
        node = client.startup_nodes[0]
        missing = [f"ClusterNode.{name}" for name in _NODE if not hasattr(node, name)]
        if missing:
            return missing
        connection = RawConnection(node)._connection
    else:
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            return ["Redis.connection_pool"]
        missing = [f"ConnectionPool.{name}" for name in _POOL if not hasattr(pool, name)]
        if missing:
            return missing
        connection = pool.make_connection()
    return [f"AbstractConnection.{name}" for name in _CONNECTION if not hasattr(connection, name)]
