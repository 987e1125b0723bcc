"""The event bus's pub/sub connections (``bus.py``): a :class:`Subscriber` is
one connection to one Redis node and the channels it holds there.

Sharded pub/sub on Redis Cluster delivers a channel's messages only on the
node that serves the channel's hash slot, so the bus keeps one subscriber per
master node that serves channels it follows, each channel held by its slot's
node; a standalone Redis or a Sentinel master serves every channel, and the
bus has one subscriber. :class:`Placement` says which node serves a channel.

Slots move, and Redis says so in three ways: it refuses a subscription on a
node that does not serve the slot (``MOVED``), it drops the subscriptions of
a slot that moved away (a ``sunsubscribe`` it sends itself, as a master that
hands over in a failover does), and a master that dies ends its connections
(its replica takes its slots a few seconds later). The subscriber lets the
channels go, the bus asks the cluster where their slots are now, and the
channels go to the subscriber of that node, whose subscription reads their
streams back like any other; every other node's subscriber carries on
meanwhile. A connection that fails is made again with backoff, to the same
node for as long as the cluster names it for those slots. (Redis 7 also
serves a shard channel on a replica of its slot's master, which gets every
message of the shard: a subscription made from a slot map a failover has made
stale, on a master turned replica, still delivers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.crc import key_slot
from redis.exceptions import AskError, RedisClusterException, SlotNotCoveredError

from .redisconn import RawConnection, refresh_slots

__all__ = ["REDIS_ERRORS", "Backoff", "Listener", "Node", "Placement", "Subscriber", "placement_for"]

logger = logging.getLogger(__name__)

#: what a call to Redis may raise when Redis, or part of a cluster, is away
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)
#: channels per SUBSCRIBE after a reconnect
_SUBSCRIBE_BATCH = 1000
#: the longest wait for the cluster to say where its slots are (a node that
#: hangs instead of refusing would hold the answer up for good)
_REFRESH_TIMEOUT = 5.0


class Backoff:
    """Seconds between attempts: doubling from 50 ms up to 2 s, and from 50 ms
    again after a success."""

    _START = 0.05
    _CAP = 2.0

    def __init__(self) -> None:
        self._next = self._START

    def reset(self) -> None:
        self._next = self._START

    async def wait(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._CAP)


class Node(NamedTuple):
    """A Redis server that serves channels."""

    name: str
    """``host:port`` of a cluster node; '' for the one server of a standalone
    or Sentinel client."""
    connect: Callable[[], RawConnection]
    """A new connection to it, not connected yet."""


class Placement(Protocol):
    """Which node serves which channel."""

    async def ready(self) -> None:
        """Learn the nodes (before the first :meth:`owner`)."""

    async def refresh(self) -> None:
        """Learn them again: a slot moved, or a node failed."""

    def owner(self, channel: bytes) -> Node:
        """The node that serves ``channel`` as last learned.

        Raises:
            SlotNotCoveredError: no node serves its slot.
        """

    def batches(self, channels: list[bytes]) -> Iterator[list[bytes]]:
        """``channels`` in groups that one SUBSCRIBE can take."""


def placement_for(client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster) -> Placement:
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return _ClusterSlots(client)
    return _OneServer(client)


def _chunks(channels: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(channels), _SUBSCRIBE_BATCH):
        yield channels[start : start + _SUBSCRIBE_BATCH]


class _OneServer:
    """A standalone Redis or the Sentinel master: it serves every channel (a
    Sentinel connection finds the master by itself)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._node = Node("", functools.partial(RawConnection, client))

    async def ready(self) -> None:
        pass

    async def refresh(self) -> None:
        pass

    def owner(self, channel: bytes) -> Node:
        return self._node

    def batches(self, channels: list[bytes]) -> Iterator[list[bytes]]:
        return _chunks(channels)


class _ClusterSlots:
    """Redis Cluster: a channel is served by the master of its hash slot, and
    one SSUBSCRIBE takes channels of one slot only (else ``CROSSSLOT``)."""

    def __init__(self, client: redis.asyncio.cluster.RedisCluster) -> None:
        self._client = client

    async def ready(self) -> None:
        await self._client.initialize()

    async def refresh(self) -> None:
        async with asyncio.timeout(_REFRESH_TIMEOUT):
            await refresh_slots(self._client)

    def owner(self, channel: bytes) -> Node:
        node = self._client.get_node_from_key(channel.decode())
        if node is None:  # only for a replica asked for
            raise SlotNotCoveredError(f"no node serves {channel!r}")
        return Node(node.name, functools.partial(RawConnection, node))

    def batches(self, channels: list[bytes]) -> Iterator[list[bytes]]:
        by_slot: defaultdict[int, list[bytes]] = defaultdict(list)
        for channel in channels:
            by_slot[key_slot(channel)].append(channel)
        for group in by_slot.values():
            yield from _chunks(group)


class Listener(Protocol):
    """What the bus does with what its subscribers read."""

    def subscribing(self, channels: list[bytes]) -> None:
        """``channels`` are about to be subscribed on a new connection."""

    async def subscribed(self, channel: bytes) -> None:
        """Redis confirmed a subscription: read the stream back, before the
        channel's next message."""

    def received(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Messages as ``(channel, data)``, in the order they came."""

    def dropped(self, subscriber: Subscriber, channels: set[bytes]) -> None:
        """``subscriber``'s node does not serve ``channels`` (any more): the
        subscriber let them go."""

    def lost(self, subscriber: Subscriber, error: Exception) -> None:
        """``subscriber``'s connection failed, or could not be made."""

    async def relocate(self, subscriber: Subscriber) -> None:
        """Before ``subscriber`` connects again: take away the channels whose
        slots another node serves now."""


class Subscriber:
    """One pub/sub connection to ``node`` (RESP2: messages are plain replies),
    and the channels it holds there: subscribed, being subscribed, or to
    subscribe once connected. It runs until it holds no channel, or is
    retired."""

    def __init__(self, node: Node, listener: Listener, placement: Placement, *, sharded: bool) -> None:
        self.node = node
        self.channels: set[bytes] = set()
        self.connected = False
        self._listener = listener
        self._placement = placement
        self._sharded = sharded
        self._connection: RawConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._retired = False

    @property
    def name(self) -> str:
        return self.node.name

    def start(self, stopping: asyncio.Event) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(stopping), name=f"celery-ws-bus-subscriber {self.name}")
        return self._task

    def retire(self) -> None:
        """Stop, and close the connection."""
        self._retired = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def add(self, channel: bytes) -> None:
        """Hold ``channel``: subscribed now when connected, else once connected."""
        if channel in self.channels:
            return
        self.channels.add(channel)
        if self._connection is not None:
            with contextlib.suppress(*REDIS_ERRORS):  # the reader sees the connection fail
                await self._connection.send(self._verb("SUBSCRIBE"), channel)

    async def remove(self, channel: bytes) -> None:
        self.channels.discard(channel)
        if self._connection is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._connection.send(self._verb("UNSUBSCRIBE"), channel)

    async def ping(self) -> None:
        """A subscriber sends nothing otherwise; a ping is what takes a Sentinel
        connection to a new master within a second of a failover (it checks
        the master before each command)."""
        if self._connection is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._connection.send("PING")

    def _verb(self, verb: str) -> str:
        return "S" + verb if self._sharded else verb

    async def _run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        while self.channels and not self._retired and not stopping.is_set():
            connection = self.node.connect()
            try:
                await connection.connect()
                # pub/sub replies as plain arrays (RESP3 would make them push messages)
                await connection.send("HELLO", 2)
                await connection.reply()
                self._connection, wanted = connection, list(self.channels)
                self._listener.subscribing(wanted)
                for batch in self._placement.batches(wanted):
                    await connection.send(self._verb("SUBSCRIBE"), *batch)
                self.connected = True
                backoff.reset()
                await self._read(connection, stopping)
            except REDIS_ERRORS as exc:  # UNBLOCKED too: a master turned replica
                self._connection = None
                self._listener.lost(self, exc)
                self.connected = False
                await backoff.wait()
                await self._listener.relocate(self)
            finally:
                self._connection = None
                self.connected = False
                await connection.close()

    async def _read(self, connection: RawConnection, stopping: asyncio.Event) -> None:
        """Each turn takes every reply already received (a burst of messages is
        handed over as one batch); a subscription's read-back happens in its
        place in the sequence, so a channel's events stay in order."""
        while not stopping.is_set() and not self._retired:
            try:
                first: Any = await connection.reply()
            except redis.ResponseError as error:
                first = error
            messages: list[tuple[bytes, bytes]] = []
            for reply in (first, *connection.buffered()):
                if isinstance(reply, AskError):  # MOVED too: this node does not serve the slot
                    self._drop({channel for channel in self.channels if key_slot(channel) == reply.slot_id})
                elif isinstance(reply, Exception):
                    self._listener.received(messages)
                    raise reply
                elif reply[0] in (b"smessage", b"message"):
                    messages.append((reply[1], reply[2]))
                elif reply[0] in (b"ssubscribe", b"subscribe"):
                    self._listener.received(messages)
                    messages = []
                    await self._listener.subscribed(reply[1])
                elif reply[0] == b"sunsubscribe" and reply[1] in self.channels:
                    self._drop({reply[1]})  # Redis dropped it: its slot moved
            self._listener.received(messages)

    def _drop(self, channels: set[bytes]) -> None:
        if channels:
            self.channels -= channels
            self._listener.dropped(self, channels)
