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
last event it delivered, and on every subscription (the first, each one after
a reconnect, and each one on the node a cluster slot moved to) reads the stream
after that id before the channel's next message, so a Redis blip or failover loses nothing the stream still holds and
delivers nothing twice. A new channel starts from its stream's newest id, read
just before subscribing.

One event may reach a replica on two channels (its user's and its task's, when
connections here follow both), or again when a stream is read back; it is
routed once, by its id and routing, among the last 8,192 events routed. The
bus speaks to Redis directly (``redisconn.py``), in RESP2, with no reply
callbacks on the way in, over one pub/sub connection per node that serves
channels it follows: one for a standalone Redis or a Sentinel master, one per
master that serves them on Redis Cluster, where a channel's messages are sent
only on the node of its hash slot (``subscriber.py``, also for what happens
when slots move).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import orjson

from ..connections import AsyncRedis
from ..protocol import event_order, with_id
from .subscriber import REDIS_ERRORS, Backoff, Subscriber, placement_for

__all__ = ["EventBus", "StreamEntry"]

logger = logging.getLogger(__name__)

#: events remembered to route an event that arrives on two channels once
_RECENT = 8192
#: a stream read, as this client (no decode_responses) gives it
_Entries = list[tuple[bytes, dict[bytes, bytes]]]
#: how far back a stream is read after a reconnect: a failover's window
_REWIND_MS = 10_000
#: seconds a channel nobody follows stays subscribed (a reconnecting tab comes back)
_LINGER = 1.0
#: stream reads in flight at once: a cluster client's node pool raises past
#: its size (100) instead of waiting, as a burst of new followers would make it
_READS_AT_ONCE = 32


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
        client: where the pub/sub connections come from (one without a socket
            timeout); a cluster client gives one per master node.
        redis: for the stream reads that back each subscription.
        deliver: the router.
        broadcasts: the broadcast stream, which every replica follows.
        on_reconnect: called each time a connection to Redis is lost, or
            cannot be made.
        on_received: called with the number of events received from Redis.
        catch_up: the most events read from a stream after a (re)subscription.
        sharded: subscribe with ``SSUBSCRIBE`` (Redis Cluster).
    """

    def __init__(
        self,
        client: AsyncRedis,
        redis_client: AsyncRedis,
        deliver: Callable[[list[StreamEntry]], None],
        *,
        broadcasts: str,
        on_reconnect: Callable[[], None],
        on_received: Callable[[int], None],
        catch_up: int,
        sharded: bool = False,
    ) -> None:
        self._placement = placement_for(client)
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
        #: the pub/sub connections, by the name of their node
        self._subscribers: dict[str, Subscriber] = {}
        #: channels whose subscription is not confirmed yet, and who waits for it
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        #: channels nobody follows now (their count in ``_followers`` is 0)
        self._unfollowed: set[bytes] = set()
        #: channels nobody followed at the last prune
        self._idle: set[bytes] = set()
        self._recent: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        #: channels of a lost connection, not read back yet
        self._rewound: set[bytes] = set()
        #: channels Redis moved off their node, to subscribe where their slot is now
        self._homeless: set[bytes] = set()
        self._rehoming = asyncio.Event()
        #: set while running, once it is known which node serves which channel
        self._placed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reads = asyncio.Semaphore(_READS_AT_ONCE)
        self._last_unstored = b""
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        """Every node that serves followed channels is connected."""
        return bool(self._subscribers) and all(s.connected for s in self._subscribers.values())

    # -- interest ---------------------------------------------------------------------

    def follow(self, channel: str) -> None:
        """One more local subscription wants ``channel``; subscribes at once
        when it is new (see :meth:`ready` to wait for it)."""
        key = channel.encode()
        followers = self._followers.get(key, 0)
        self._followers[key] = followers + 1
        if not followers:
            self._unfollowed.discard(key)
        if key in self._confirming or key in self._homeless or self._holder(key) is not None:
            return
        self._confirming[key] = asyncio.get_running_loop().create_future()
        self._track(asyncio.create_task(self._subscribe_new(key)))

    def unfollow(self, channel: str) -> None:
        """One local subscription less; the channel is dropped a little later
        if nobody follows it again meanwhile."""
        key = channel.encode()
        followers = self._followers.get(key)
        if followers:
            self._followers[key] = followers - 1
            if followers == 1:
                self._unfollowed.add(key)

    async def prepare(self, channels: Iterable[str]) -> None:
        """Read where each channel not followed yet starts, before the
        subscription that follows it is registered: the read-back after
        subscribing then covers every event from before that registration, so
        nothing stored meanwhile misses the new follower (at worst it gets an
        event or two from just before it subscribed)."""
        for channel in channels:
            key = channel.encode()
            if key in self._cursors or key in self._confirming or self._holder(key) is not None:
                continue
            if key not in self._followers:  # pruned if nobody follows it after all
                self._followers[key] = 0
                self._unfollowed.add(key)
            with contextlib.suppress(*REDIS_ERRORS):
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
        return sum(len(s.channels) for s in self._subscribers.values())

    async def _subscribe_new(self, key: bytes) -> None:
        """A new channel starts after its stream's newest event, read before
        subscribing: whatever is stored after that reaches this replica."""
        with contextlib.suppress(*REDIS_ERRORS):
            if key not in self._cursors:  # read by prepare() already
                newest = await self._newest(key)
                self._cursors.setdefault(key, newest)  # unless its subscription read it meanwhile
        # before the nodes are known (or once stopped), run() places every channel
        # followed when they are: nothing waits here for that
        if self._placed.is_set():
            await self._place(key)

    async def prune(self) -> None:
        """Unsubscribe channels nobody has followed since the last prune; a
        connection left with none closes. (Kept as they change, the channels
        nobody follows are not looked for among all of them: at 15,000 a scan
        held the event loop for 5 ms every second.)"""
        idle = set(self._unfollowed)
        for key in idle & self._idle:
            del self._followers[key]
            self._unfollowed.discard(key)
            self._cursors.pop(key, None)
            self._rewound.discard(key)
            self._homeless.discard(key)
            self._confirmed(key)  # nobody waits for it, and a new follower subscribes it afresh
            subscriber = self._holder(key)
            if subscriber is not None:
                await subscriber.remove(key)
                if not subscriber.channels:
                    self._retire(subscriber)
        self._idle = idle

    # -- the connections --------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self.follow(self._broadcasts.decode())
        self._track(asyncio.create_task(self._prune_every(stopping)))
        self._track(asyncio.create_task(self._rehome_every(stopping)))
        try:
            await self._start(stopping)
            await stopping.wait()
        finally:
            self._placed.clear()
            for subscriber in list(self._subscribers.values()):
                self._retire(subscriber)
            pending = list(self._pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _start(self, stopping: asyncio.Event) -> None:
        """Learn which node serves which channel (a cluster client knows nothing
        before it asks), then subscribe every channel followed so far."""
        backoff = Backoff()
        while not stopping.is_set():
            try:
                await self._placement.ready()
            except REDIS_ERRORS as exc:
                logger.debug("Redis Cluster unreachable (%s); trying again", exc)
                self._on_reconnect()
                await backoff.wait()
            else:
                self._placed.set()
                for key in list(self._followers):
                    await self._place(key)
                return

    async def _place(self, key: bytes) -> None:
        """Subscribe a followed channel on the node that serves it, unless a
        connection holds it already."""
        if key not in self._followers or self._holder(key) is not None:
            return
        try:
            node = self._placement.owner(key)
        except REDIS_ERRORS:  # no node serves its slot as far as we know: ask again
            self._rehome({key})
            return
        subscriber = self._subscribers.get(node.name)
        if subscriber is None:
            subscriber = Subscriber(node, self, self._placement, sharded=self._sharded)
            self._subscribers[node.name] = subscriber
            await subscriber.add(key)
            self._track(subscriber.start(self._stopping))
        else:
            await subscriber.add(key)

    def _holder(self, key: bytes) -> Subscriber | None:
        return next((s for s in self._subscribers.values() if key in s.channels), None)

    def _retire(self, subscriber: Subscriber) -> None:
        if self._subscribers.get(subscriber.name) is subscriber:
            del self._subscribers[subscriber.name]
        subscriber.retire()

    def _rehome(self, channels: set[bytes]) -> None:
        self._homeless |= channels
        self._rehoming.set()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _prune_every(self, stopping: asyncio.Event) -> None:
        """Prune, and ping every connection (``Subscriber.ping``)."""
        while not stopping.is_set():
            await asyncio.sleep(_LINGER)
            await self.prune()
            for subscriber in list(self._subscribers.values()):
                await subscriber.ping()

    async def _rehome_every(self, stopping: asyncio.Event) -> None:
        """Subscribe the channels Redis moved off their node where their slots
        are now. A slot's channels move together, in a burst of messages:
        waiting a moment asks the cluster once for all of them."""
        backoff = Backoff()
        while not stopping.is_set():
            await self._rehoming.wait()
            await backoff.wait()
            try:
                await self._placement.refresh()
            except REDIS_ERRORS as exc:
                logger.debug("could not learn where the slots are (%s); trying again", exc)
                continue
            backoff.reset()
            self._rehoming.clear()
            homeless, self._homeless = self._homeless, set()
            for key in homeless:
                await self._place(key)

    # -- what the connections tell the bus (subscriber.Listener) -----------------------

    def subscribing(self, channels: list[bytes]) -> None:
        for key in channels:
            self._confirming.setdefault(key, asyncio.get_running_loop().create_future())

    async def subscribed(self, channel: bytes) -> None:
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
            async with self._reads:
                entries = cast("_Entries", await self._redis.xrange(channel, min=start, count=self._catch_up))
            if entries:
                self._cursors[channel] = max(cursor, event_order(entries[-1][0]))
                self._on_received(len(entries))
                # a broadcast goes out without its id, as it does live (emit.lua)
                frame = _frame if channel == self._broadcasts else with_id
                self._route([_from_stream(entry_id, fields, frame) for entry_id, fields in entries])
        self._confirmed(channel)

    def _confirmed(self, channel: bytes) -> None:
        waiter = self._confirming.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def received(self, messages: list[tuple[bytes, bytes]]) -> None:
        if messages:
            self._on_received(len(messages))
            entries = (self._entry(channel, data) for channel, data in messages)
            self._route([entry for entry in entries if entry is not None])

    def dropped(self, subscriber: Subscriber, channels: set[bytes]) -> None:
        self._rehome(channels)
        if not subscriber.channels:
            self._retire(subscriber)

    def lost(self, subscriber: Subscriber, error: Exception) -> None:
        if subscriber.connected:
            where = f" node {subscriber.name}" if subscriber.name else ""
            logger.warning("lost Redis%s (%s); reconnecting", where, error)
        self._on_reconnect()
        self._rewound |= subscriber.channels

    async def relocate(self, subscriber: Subscriber) -> None:
        try:
            await self._placement.refresh()
        except REDIS_ERRORS as exc:
            logger.debug("could not learn where the slots are (%s); trying again", exc)
            return
        moving = set()
        for key in subscriber.channels:
            with contextlib.suppress(*REDIS_ERRORS):
                if self._placement.owner(key).name != subscriber.name:
                    moving.add(key)
        if moving:
            subscriber.channels -= moving
            if not subscriber.channels:
                self._retire(subscriber)
            for key in moving:
                await self._place(key)

    # -- events -----------------------------------------------------------------------

    def _entry(self, channel: bytes, data: bytes) -> StreamEntry | None:
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

    async def _newest(self, stream: bytes) -> tuple[int, int]:
        """The order of the stream's newest event ((0, 0): none yet)."""
        async with self._reads:
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
