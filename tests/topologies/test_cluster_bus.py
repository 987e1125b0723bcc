"""The server's event bus on a real Redis Cluster (three masters, one replica
each): it subscribes each channel on the master that serves its slot, with one
connection per master, and delivers every stored event once and in order per
channel, through a master killed outright, a forced failover and slots moved
to another master, while the other masters' channels keep flowing; a channel
nobody follows any more is unsubscribed on its node.

Events are stored the way ``emit.lua`` stores an event of one stream (``XADD``
then ``SPUBLISH`` on the stream's own name, in one script); what the bus
delivers is compared with what the streams hold."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from redis.crc import key_slot

from celery_ws.connections import async_client
from celery_ws.server import redisconn
from celery_ws.server.bus import EventBus, StreamEntry
from celery_ws.testing.redis_topologies import RedisClusterNodes, RedisNode
from tests.helpers import running_bus, seconds

# what emit.lua does for an event that goes to one stream: store, then publish
# the header [id, owner, task, workflow, type], a newline and the frame with its id
EMIT = """
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 'u', ARGV[2], 't', ARGV[3], 'w', '', 'y', ARGV[4])
local with_id = '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2)
redis.call('SPUBLISH', KEYS[1], cjson.encode({id, ARGV[2], ARGV[3], '', ARGV[4]}) .. '\\n' .. with_id)
return id
"""


@dataclass
class Bus:
    """An EventBus built as the server builds it, running, and what it delivered."""

    bus: EventBus
    prefix: str
    delivered: list[StreamEntry] = field(default_factory=list)
    reconnects: int = 0

    def ids(self, channel: str) -> list[str]:
        """Ids delivered from ``channel`` (its owner), in delivery order."""
        return [e.id for e in self.delivered if e.owner == owner_of(channel)]


def owner_of(channel: str) -> str:
    """The user a test channel is the stream of: ``<prefix>:user:{<user>}:events``."""
    return channel.split("{", 1)[1].split("}", 1)[0]


@pytest.fixture
async def running(redis_cluster_url: str) -> AsyncIterator[Bus]:
    prefix = f"cws-bus-{uuid.uuid4().hex[:8]}"
    subscribing = async_client(redis_cluster_url, blocking=True)
    reads = async_client(redis_cluster_url)
    state: Bus

    def on_reconnect() -> None:
        state.reconnects += 1

    bus = EventBus(
        subscribing,
        reads,
        lambda entries: state.delivered.extend(entries),
        broadcasts=f"{prefix}:broadcasts",
        on_reconnect=on_reconnect,
        on_received=lambda n: None,
        catch_up=10_000,
        sharded=True,
    )
    state = Bus(bus, prefix)
    async with running_bus(bus, subscribing, reads):
        yield state


@pytest.fixture
async def writer(redis_cluster_url: str) -> AsyncIterator[Any]:
    client = async_client(redis_cluster_url)
    # before concurrent commands: a fresh asyncio cluster client that learns
    # the slots under several at once can cut a connection under a command
    # already sent, and send it again (a script run twice)
    await client.initialize()
    yield client
    await client.aclose()


def slot_ranges(node: RedisNode) -> list[tuple[int, int, int]]:
    """``(first slot, last slot, master port)`` of every slot range, as ``node`` knows them."""
    return [(int(r[0]), int(r[1]), int(r[2][1])) for r in node.command("CLUSTER", "SLOTS")]


def owner_port(ranges: list[tuple[int, int, int]], slot: int) -> int:
    return next(port for first, last, port in ranges if first <= slot <= last)


def node_at(cluster: RedisClusterNodes, port: int) -> RedisNode:
    return next(n for n in cluster.running_nodes() if n.port == port)


def served_by(cluster: RedisClusterNodes, channel: str) -> RedisNode:
    return node_at(cluster, owner_port(slot_ranges(cluster.masters()[0]), key_slot(channel.encode())))


def channels_by_master(cluster: RedisClusterNodes, prefix: str, per_master: int) -> dict[int, list[str]]:
    """``per_master`` user channels on each master, by the master's port; the
    prefix is in their hash tags, so their slots hold no other test's streams."""
    ranges = slot_ranges(cluster.masters()[0])
    found: dict[int, list[str]] = {port: [] for _, _, port in ranges}
    for n in range(10_000):
        channel = f"{prefix}:user:{{{prefix}-{n}}}:events"
        port = owner_port(ranges, key_slot(channel.encode()))
        if len(found[port]) < per_master:
            found[port].append(channel)
        if all(len(chosen) == per_master for chosen in found.values()):
            return found
    raise AssertionError("no channel names found for every master")


def shard_subscribers(node: RedisNode) -> dict[int, int]:
    """Client id -> shard channels it subscribes, for the clients of ``node`` that subscribe any."""
    counts = {}
    for line in str(node.command("CLIENT", "LIST")).splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if int(fields.get("ssub", 0)):
            counts[int(fields["id"])] = int(fields["ssub"])
    return counts


def move_slot(cluster: RedisClusterNodes, slot: int, source: RedisNode, target: RedisNode) -> None:
    """Reshard one slot that holds no key from master ``source`` to master
    ``target``, and wait until every node says so."""
    assert int(source.command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
    source_id, target_id = source.command("CLUSTER", "MYID"), target.command("CLUSTER", "MYID")
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    for node in (target, source):
        node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    deadline = time.monotonic() + seconds(10)
    while not all(owner_port(slot_ranges(node), slot) == target.port for node in cluster.running_nodes()):
        assert time.monotonic() < deadline, f"slot {slot} did not move to {target.address}"
        time.sleep(0.05)


async def emit(client: Any, channel: str, n: int) -> str:
    frame = orjson.dumps({"type": "counted", "n": n}).decode()
    event_id = await client.eval(EMIT, 1, channel, frame, owner_of(channel), "", "counted")
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


async def stored(client: Any, channel: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await client.xrange(channel)]


async def follow(running: Bus, channels: Iterable[str]) -> None:
    channels = list(channels)
    for channel in channels:
        running.bus.follow(channel)
    await running.bus.ready(channels, seconds(10))


async def until(check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check()`` every 50 ms until it is truthy or ``timeout`` passes; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = check()
    while not value and loop.time() < deadline:
        await asyncio.sleep(0.05)
        value = check()
    return value


async def all_delivered(running: Bus, writer: Any, channels: list[str]) -> dict[str, list[str]]:
    """Waits until every event the streams hold is delivered; the streams' ids."""
    streams = {channel: await stored(writer, channel) for channel in channels}
    await until(lambda: all(set(ids) <= set(running.ids(ch)) for ch, ids in streams.items()), seconds(15))
    return streams


class Emitters:
    """One task per channel storing an event every 20 ms, each on its own so a
    channel whose master is away holds up no other. A write that fails after
    the client's own retries is skipped: what the streams hold is what the
    test compares deliveries with."""

    def __init__(self, client: Any, channels: list[str]) -> None:
        self._client = client
        self.stored: dict[str, list[tuple[float, str]]] = {channel: [] for channel in channels}
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._emit(channel)) for channel in channels]

    async def _emit(self, channel: str) -> None:
        loop = asyncio.get_running_loop()
        for n in range(100_000):
            if self._stop.is_set():
                return
            with contextlib.suppress(Exception):
                event_id = await emit(self._client, channel, n)
                self.stored[channel].append((loop.time(), event_id))
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(seconds(30)):
            await asyncio.gather(*self._tasks)


def assert_once_in_order(running: Bus, streams: dict[str, list[str]], lost_ok: Iterable[str] = ()) -> None:
    """Every stored event delivered, each once and in id order per channel; an
    event may be delivered that the stream no longer holds only on a channel
    in ``lost_ok`` (written to a master killed before its replica had it)."""
    for channel, ids in streams.items():
        delivered = running.ids(channel)
        assert len(delivered) == len(set(delivered)), f"{channel}: an event delivered twice"
        assert delivered == sorted(delivered, key=lambda i: tuple(map(int, i.split("-")))), channel
        assert set(ids) <= set(delivered), f"{channel}: {len(set(ids) - set(delivered))} events missed"
        if channel not in lost_ok:
            assert delivered == ids, channel


async def test_the_cluster_client_has_the_internals_the_bus_uses(redis_cluster_url: str) -> None:
    client = async_client(redis_cluster_url, blocking=True)
    try:
        assert redisconn.missing_internals(client) == []
    finally:
        await client.aclose()


async def test_events_on_every_master_are_delivered_once_in_order_over_one_connection_each(
    redis_cluster: RedisClusterNodes, running: Bus, writer: Any
) -> None:
    by_master = channels_by_master(redis_cluster, running.prefix, 2)
    channels = [c for chosen in by_master.values() for c in chosen]
    await follow(running, channels)
    for n in range(50):
        await asyncio.gather(*(emit(writer, channel, n) for channel in channels))
    streams = await all_delivered(running, writer, channels)

    assert {c: len(ids) for c, ids in streams.items()} == dict.fromkeys(channels, 50)
    assert_once_in_order(running, streams)
    assert [
        orjson.loads(e.frame)["n"] for e in running.delivered if e.owner == owner_of(channels[0])
    ] == list(range(50))
    # one connection per master, holding that master's channels (and one the broadcasts)
    subscribers = {m.port: shard_subscribers(m) for m in redis_cluster.masters()}
    assert {port: len(clients) for port, clients in subscribers.items()} == dict.fromkeys(by_master, 1)
    assert sorted(n for clients in subscribers.values() for n in clients.values()) == [2, 2, 3]
    assert running.bus.connected
    assert running.bus.channels == len(channels) + 1
    assert running.reconnects == 0


@pytest.mark.timeout(120)  # kill_master() and restart() may each wait 30 s
async def test_a_killed_master_s_channels_move_to_its_replica_while_the_others_keep_flowing(
    redis_cluster: RedisClusterNodes, running: Bus, writer: Any
) -> None:
    by_master = channels_by_master(redis_cluster, running.prefix, 2)
    channels = [c for chosen in by_master.values() for c in chosen]
    await follow(running, channels)
    victim_port, victims = next(iter(by_master.items()))
    victim = node_at(redis_cluster, victim_port)
    others = [c for c in channels if c not in victims]
    held = sum(shard_subscribers(victim).values())
    survivors = {port: set(shard_subscribers(node_at(redis_cluster, port))) for port in by_master}
    del survivors[victim_port]

    loop = asyncio.get_running_loop()
    emitters = Emitters(writer, channels)
    try:
        await asyncio.sleep(0.5)
        killed_at = loop.time()
        promoted = await asyncio.to_thread(redis_cluster.kill_master, victim)
        promoted_at = loop.time()
        await asyncio.sleep(1)
        await emitters.stop()
        streams = await all_delivered(running, writer, channels)

        assert_once_in_order(running, streams, lost_ok=victims)
        # the victim's channels: what was stored after the promotion arrived
        for channel in victims:
            after = [i for t, i in emitters.stored[channel] if t > promoted_at]
            assert after, f"{channel}: nothing stored after the promotion"
            assert set(after) <= set(running.ids(channel))
        # the other masters' channels flowed while the victim was down, over
        # the connections the bus had before the kill
        for channel in others:
            during = [i for t, i in emitters.stored[channel] if killed_at < t < promoted_at]
            assert during, f"{channel}: nothing stored while the master was down"
            assert set(during) <= set(running.ids(channel))
        assert {port: set(shard_subscribers(node_at(redis_cluster, port))) for port in survivors} == survivors
        assert sum(shard_subscribers(promoted).values()) == held
        assert running.bus.connected
        assert running.reconnects >= 1
    finally:
        await emitters.stop()
        # the session's cluster goes on with six nodes: the killed one comes back as a replica
        await asyncio.to_thread(redis_cluster.restart, victim)


@pytest.mark.timeout(90)
async def test_a_forced_failover_moves_channels_with_nothing_lost_or_repeated(
    redis_cluster: RedisClusterNodes, running: Bus, writer: Any
) -> None:
    by_master = channels_by_master(redis_cluster, running.prefix, 2)
    channels = [c for chosen in by_master.values() for c in chosen]
    await follow(running, channels)
    old_port, moved = next(iter(by_master.items()))
    old = node_at(redis_cluster, old_port)
    held = sum(shard_subscribers(old).values())
    assert held >= len(moved)

    emitters = Emitters(writer, channels)
    try:
        await asyncio.sleep(0.5)
        new = await asyncio.to_thread(redis_cluster.failover, old)
        await asyncio.sleep(1)
    finally:
        await emitters.stop()
    streams = await all_delivered(running, writer, channels)

    assert all(len(ids) > 20 for ids in streams.values())
    assert_once_in_order(running, streams)
    # Redis dropped the subscriptions on the old master, a replica now: they
    # are on the new one, and the bus's connection to the old one is closed
    assert await until(lambda: not shard_subscribers(old), seconds(5))
    assert sum(shard_subscribers(new).values()) == held
    assert running.bus.connected
    assert running.reconnects == 0  # no connection was lost: the channels moved


@pytest.mark.timeout(90)
async def test_channels_of_resharded_slots_follow_their_slots(
    redis_cluster: RedisClusterNodes, running: Bus, writer: Any
) -> None:
    by_master = channels_by_master(redis_cluster, running.prefix, 2)
    source_port, (kept, later) = next(iter(by_master.items()))
    target_port = next(port for port in by_master if port != source_port)
    source, target = node_at(redis_cluster, source_port), node_at(redis_cluster, target_port)
    await follow(running, [c for chosen in by_master.values() for c in chosen if c != later])
    slots = [key_slot(later.encode()), key_slot(kept.encode())]
    assert slots[0] != slots[1]
    moved: list[int] = []
    try:
        # a slot the bus holds no channel in: its map still has the old master,
        # which answers the subscription with MOVED
        await asyncio.to_thread(move_slot, redis_cluster, slots[0], source, target)
        moved.append(slots[0])
        await follow(running, [later])
        assert target.command("PUBSUB", "SHARDNUMSUB", later)[1] == 1
        # a slot it holds a channel in: Redis drops the subscription (sunsubscribe)
        await asyncio.to_thread(move_slot, redis_cluster, slots[1], source, target)
        moved.append(slots[1])
        assert await until(lambda: target.command("PUBSUB", "SHARDNUMSUB", kept)[1] == 1, seconds(10))
        assert source.command("PUBSUB", "SHARDNUMSUB", kept)[1] == 0

        ids = {channel: [await emit(writer, channel, n) for n in range(3)] for channel in (kept, later)}
        assert await until(lambda: all(running.ids(c) == ids[c] for c in ids), seconds(10))
        assert running.bus.connected
        assert running.reconnects == 0
    finally:  # the slots go back, for the session's other tests
        for channel in (kept, later):
            await writer.delete(channel)
        for slot in moved:
            await asyncio.to_thread(move_slot, redis_cluster, slot, target, source)


async def test_a_channel_nobody_follows_is_unsubscribed_on_its_node(
    redis_cluster: RedisClusterNodes, running: Bus, writer: Any
) -> None:
    broadcasts = served_by(redis_cluster, f"{running.prefix}:broadcasts")
    by_master = channels_by_master(redis_cluster, running.prefix, 1)
    channels = [c for chosen in by_master.values() for c in chosen]
    await follow(running, channels)
    # one on the master that also serves the broadcasts, one on a master that serves nothing else
    shared = by_master[broadcasts.port][0]
    alone = next(c for c in channels if c != shared)
    kept = next(c for c in channels if c not in (shared, alone))
    node = served_by(redis_cluster, alone)
    assert {c: served_by(redis_cluster, c).command("PUBSUB", "SHARDNUMSUB", c)[1] for c in channels} == (
        dict.fromkeys(channels, 1)
    )

    running.bus.unfollow(shared)
    running.bus.unfollow(alone)
    # they linger a second for a tab that comes back, then go; so does the
    # connection left with nothing to hold, not the other one
    assert await until(
        lambda: (
            not any(
                served_by(redis_cluster, c).command("PUBSUB", "SHARDNUMSUB", c)[1] for c in (shared, alone)
            )
        ),
        seconds(5),
    )
    assert await until(lambda: not shard_subscribers(node), seconds(5))
    assert list(shard_subscribers(broadcasts).values()) == [1]
    for channel in channels:
        await emit(writer, channel, 0)
    assert await until(lambda: running.ids(kept), seconds(10))
    await asyncio.sleep(0.2)
    assert running.ids(shared) == running.ids(alone) == []
    assert running.bus.channels == 2  # the broadcasts and ``kept``
    assert running.bus.connected

    # followed again: subscribed again on its node, from its stream's newest event
    await follow(running, [alone])
    assert node.command("PUBSUB", "SHARDNUMSUB", alone)[1] == 1
    event_id = await emit(writer, alone, 1)
    assert await until(lambda: running.ids(alone) == [event_id], seconds(10))
