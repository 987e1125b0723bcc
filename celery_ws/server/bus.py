"""Reads from Redis the events this replica's connections follow, and hands
each one to the router.

Delivery by interest: every event is published, as it is stored, on the
pub/sub channel (sharded on Redis Cluster) of each history stream it goes to
(its user's, its task's, its workflow's; ``emit.lua``), and a replica
subscribes only to the channels of the users and tasks its own connections
follow, plus broadcasts. So Redis sends a replica only what it delivers, and a
replica parses nothing it throws away: Redis' read work grows with deliveries,
not with events times replicas as it did with one stream every replica read.

Pub/sub alone loses what is published while a subscriber reconnects. The
streams stay the source of truth: the bus remembers, per channel, the id of the
last event it delivered, and on every subscription (the first, and each one
after a reconnect) reads the stream after that id before the channel's next
message, so a Redis blip or failover loses nothing the stream still holds and
delivers nothing twice. A new channel starts from its stream's newest id, read
just before subscribing.

One event may reach a replica on two channels (its user's and its task's, when
connections here follow both), or again when a stream is read back; it is
routed once, by its id and routing, among the last 8,192 events routed. The
bus speaks to its Redis connection directly (``redisconn.py``): one pub/sub
connection, spoken to in RESP2, no reply callbacks on the way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import orjson
import redis
import redis.asyncio

from ..protocol import event_order, with_id
from .redisconn import RawConnection

__all__ = ["EventBus", "StreamEntry"]

logger = logging.getLogger(__name__)

_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
#: events remembered to route an event that arrives on two channels once
_RECENT = 8192
#: a stream read, as this client (no decode_responses) gives it
_Entries = list[tuple[bytes, dict[bytes, bytes]]]
#: how far back a stream is read after a reconnect: a failover's window
_REWIND_MS = 10_000
#: channels per SUBSCRIBE after a reconnect
_SUBSCRIBE_BATCH = 1000
#: seconds a channel nobody follows stays subscribed (a reconnecting tab comes back)
_LINGER = 1.0


class StreamEntry(NamedTuple):
    """One event as the router needs it."""

    id: str
    """'' for an event that is never stored (a heartbeat)."""
    frame: bytes
    """The event's JSON, id included."""
    owner: str
    task: str
    type: str
    workflow: str


class EventBus:
    """Subscriptions by interest, each backed by its stream.

    Args:
        client: where the pub/sub connection comes from (one without a socket timeout).
        redis: for the stream reads that back each subscription.
        deliver: the router.
        broadcasts: the broadcast stream, which every replica follows.
        on_reconnect: called each time the connection to Redis is lost.
        on_received: called with the number of events received from Redis.
        catch_up: the most events read from a stream after a (re)subscription.
        sharded: subscribe with ``SSUBSCRIBE`` (Redis Cluster).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        redis_client: redis.asyncio.Redis,
        deliver: Callable[[list[StreamEntry]], None],
        *,
        broadcasts: str,
        on_reconnect: Callable[[], None],
        on_received: Callable[[int], None],
        catch_up: int,
        sharded: bool = False,
    ) -> None:
        self._client = client
        self._redis = redis_client
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._on_received = on_received
        self._catch_up = catch_up
        self._sharded = sharded
        self._broadcasts = broadcasts.encode()
        #: channel -> how many subscriptions of local connections follow it
        self._followers: dict[bytes, int] = {}
        #: stream channel -> order (``event_order``) of the last event delivered from it
        self._cursors: dict[bytes, tuple[int, int]] = {}
        #: channels subscribed on the current connection (confirmed or not)
        self._subscribed: set[bytes] = set()
        #: channels whose subscription is not confirmed yet, and who waits for it
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        #: channels nobody followed at the last prune
        self._idle: set[bytes] = set()
        self._recent: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        #: channels subscribed again after a reconnect, not read back yet
        self._rewound: set[bytes] = set()
        self._last_unstored = b""
        self._connection: RawConnection | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.connected = False

    # -- interest ---------------------------------------------------------------------

    def follow(self, channel: str) -> None:
        """One more local subscription wants ``channel``; subscribes at once
        when it is new (see :meth:`ready` to wait for it)."""
        key = channel.encode()
        followers = self._followers.get(key, 0)
        self._followers[key] = followers + 1
        if key in self._subscribed or key in self._confirming:
            return
        self._confirming[key] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._subscribe_new(key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def unfollow(self, channel: str) -> None:
        """One local subscription less; the channel is dropped a little later
        if nobody follows it again meanwhile."""
        key = channel.encode()
        followers = self._followers.get(key)
        if followers:
            self._followers[key] = followers - 1

    async def prepare(self, channels: Iterable[str]) -> None:
        """Read where each channel not followed yet starts, before the
        subscription that follows it is registered: the read-back after
        subscribing then covers every event from before that registration, so
        nothing stored meanwhile misses the new follower (at worst it gets an
        event or two from just before it subscribed)."""
        for channel in channels:
            key = channel.encode()
            if key in self._cursors or key in self._subscribed or key in self._confirming:
                continue
            self._followers.setdefault(key, 0)  # pruned if nobody follows it after all
            with contextlib.suppress(redis.RedisError, OSError):
                self._cursors[key] = await self._newest(key)

    async def ready(self, channels: Iterable[str], timeout: float) -> None:
        """Wait until ``channels`` are subscribed and caught up, at most
        ``timeout`` seconds (when Redis is away, they are once it is back)."""
        waiting = [self._confirming[c] for c in (ch.encode() for ch in channels) if c in self._confirming]
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*waiting)), timeout)

    @property
    def channels(self) -> int:
        return len(self._subscribed)

    async def _subscribe_new(self, key: bytes) -> None:
        """A new channel starts after its stream's newest event, read before
        subscribing: whatever is stored after that reaches this replica."""
        with contextlib.suppress(redis.RedisError, OSError):
            if key not in self._cursors:  # read by prepare() already
                self._cursors[key] = await self._newest(key)
            if self._connection is not None and key not in self._subscribed:
                self._subscribed.add(key)
                await self._connection.send(self._command("SUBSCRIBE"), key)

    def _command(self, verb: str) -> str:
        return "S" + verb if self._sharded else verb

    async def prune(self) -> None:
        """Unsubscribe channels nobody has followed since the last prune."""
        idle = {key for key, n in self._followers.items() if n == 0}
        for key in idle & self._idle:
            del self._followers[key]
            self._cursors.pop(key, None)
            if key in self._subscribed and self._connection is not None:
                self._subscribed.discard(key)
                with contextlib.suppress(redis.RedisError, OSError):
                    await self._connection.send(self._command("UNSUBSCRIBE"), key)
        self._idle = idle

    # -- the connection ---------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = _BACKOFF_START
        self.follow(self._broadcasts.decode())
        pruner = asyncio.create_task(self._prune_every(stopping))
        try:
            while not stopping.is_set():
                connection = RawConnection(self._client)
                try:
                    await connection.connect()
                    # pub/sub replies as plain arrays (RESP3 would make them push messages)
                    await connection.send("HELLO", 2)
                    await connection.reply()
                    self._connection, self._subscribed = connection, set(self._followers)
                    wanted = list(self._followers)
                    if self._cursors:  # a reconnect: these read back a little further
                        self._rewound = set(wanted)
                    for key in wanted:
                        self._confirming.setdefault(key, asyncio.get_running_loop().create_future())
                    for start in range(0, len(wanted), _SUBSCRIBE_BATCH):
                        await connection.send(
                            self._command("SUBSCRIBE"), *wanted[start : start + _SUBSCRIBE_BATCH]
                        )
                    self.connected = True
                    backoff = _BACKOFF_START
                    await self._read(connection, stopping)
                except (redis.RedisError, OSError) as exc:  # UNBLOCKED too: a master turned replica
                    if self.connected:
                        logger.warning("lost Redis (%s); reconnecting", exc)
                    self.connected = False
                    self._connection = None
                    self._on_reconnect()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_CAP)
                finally:
                    self._connection = None
                    await connection.close()
        finally:
            pending = [pruner, *self._pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _prune_every(self, stopping: asyncio.Event) -> None:
        """Prune, and ping: a subscriber sends nothing otherwise, and a ping is
        what takes it to a new master within a second of a failover (its
        Sentinel connection checks the master before each command)."""
        while not stopping.is_set():
            await asyncio.sleep(_LINGER)
            await self.prune()
            if self._connection is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    await self._connection.send("PING")

    async def _read(self, connection: RawConnection, stopping: asyncio.Event) -> None:
        """Each turn takes every message already received (a burst is routed as
        one batch); a subscription's read-back happens in its place in the
        sequence, so a channel's events stay in order."""
        while not stopping.is_set():
            batch: list[StreamEntry] = []
            replies = (await connection.reply(), *connection.buffered())
            self._on_received(sum(1 for reply in replies if reply[0] in (b"smessage", b"message")))
            for reply in replies:
                kind, channel = reply[0], reply[1]
                if kind in (b"smessage", b"message"):
                    entry = self._received(channel, reply[2])
                    if entry is not None:
                        batch.append(entry)
                elif kind in (b"ssubscribe", b"subscribe"):
                    self._route(batch)
                    batch = []
                    await self._confirmed(channel)
                elif kind == b"sunsubscribe" and channel in self._subscribed:
                    # Redis dropped it (a cluster slot moved): take it up again
                    await connection.send("SSUBSCRIBE", channel)
            self._route(batch)

    def _received(self, channel: bytes, data: bytes) -> StreamEntry | None:
        header, _, frame = data.partition(b"\n")
        event_id, owner, task, workflow, type_ = orjson.loads(header)
        if event_id:
            cursor = self._cursors.get(channel)
            if cursor is not None:
                order = event_order(event_id)
                if order <= cursor:
                    return None  # read already, with the stream after a (re)subscription
                self._cursors[channel] = order
        elif data == self._last_unstored:
            return None  # a heartbeat published on two channels this replica follows
        else:
            self._last_unstored = data
        return StreamEntry(event_id, frame, owner, task, type_, workflow)

    async def _confirmed(self, channel: bytes) -> None:
        """Subscribed: read the stream after the last event delivered from it,
        before the channel's next message."""
        cursor = self._cursors.get(channel)
        if cursor is None:  # Redis was away when the channel was new: start now
            self._cursors[channel] = await self._newest(channel)
        else:
            start = b"(%d-%d" % cursor
            if channel in self._rewound:
                # after a failover, processes that moved to the new master at
                # different moments may have stored events there with ids below
                # the last one read on the old master: read those too (what was
                # delivered already is dropped by id)
                self._rewound.discard(channel)
                start = b"%d-0" % max(0, cursor[0] - _REWIND_MS)
            entries = cast("_Entries", await self._redis.xrange(channel, min=start, count=self._catch_up))
            if entries:
                self._cursors[channel] = max(cursor, event_order(entries[-1][0]))
                self._on_received(len(entries))
                # a broadcast goes out without its id, as it does live (emit.lua)
                frame = _frame if channel == self._broadcasts else with_id
                self._route([_from_stream(entry_id, fields, frame) for entry_id, fields in entries])
        waiter = self._confirming.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _newest(self, stream: bytes) -> tuple[int, int]:
        """The order of the stream's newest event ((0, 0): none yet)."""
        newest = cast("_Entries", await self._redis.xrevrange(stream, count=1))
        return event_order(newest[0][0]) if newest else (0, 0)

    def _route(self, entries: list[StreamEntry]) -> None:
        """Hand over each event once, however many channels brought it."""
        recent = self._recent
        fresh = []
        for entry in entries:
            if entry.id:
                seen = (entry.id, entry.owner, entry.task)
                if seen in recent:
                    continue
                recent[seen] = None
                if len(recent) > _RECENT:
                    recent.popitem(last=False)
            fresh.append(entry)
        if fresh:
            try:
                self._deliver(fresh)
            except Exception:  # a routing bug must not stop delivery to everyone else
                logger.exception("failed to deliver %d events", len(fresh))


def _frame(entry_id: bytes, payload: bytes) -> bytes:
    return payload


def _from_stream(
    entry_id: bytes, fields: dict[bytes, Any], frame: Callable[[bytes, bytes], bytes]
) -> StreamEntry:
    return StreamEntry(
        entry_id.decode(),
        frame(entry_id, fields[b"d"]),
        fields.get(b"u", b"").decode(),
        fields.get(b"t", b"").decode(),
        fields.get(b"y", b"").decode(),
        fields.get(b"w", b"").decode(),
    )
