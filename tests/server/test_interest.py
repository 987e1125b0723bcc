"""Delivery by interest: a replica reads from Redis only the events of the
users and tasks its own connections follow (plus broadcasts), so adding
replicas does not multiply Redis' read work or each replica's parsing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celery_ws import Publisher, Settings, issue_token
from celery_ws.client import Client
from celery_ws.connections import async_client
from celery_ws.server.bus import EventBus
from celery_ws.testing import ServerThread
from tests.helpers import running_bus, seconds

EVENTS = 1_000


@pytest.fixture
def settings(celery_ws_redis_url: str) -> Settings:
    return Settings.load(
        redis_url=celery_ws_redis_url,
        secret="interest-secret-0123456789abcdefghij",
        key_prefix=f"interest{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def replicas(settings: Settings) -> Iterator[list[ServerThread]]:
    servers = [ServerThread(settings).start() for _ in range(4)]
    yield servers
    for server in servers:
        server.stop()


def status(server: ServerThread) -> dict[str, Any]:
    return server.call(server.manager.get_status)


async def test_replicas_read_only_the_events_their_connections_follow(
    replicas: list[ServerThread], settings: Settings
) -> None:
    users = [f"reader-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    first = replicas[0]
    clients = [
        await Client(
            f"{first.url}/?token={issue_token(u, settings=settings)}", timeout=seconds(10)
        ).__aenter__()
        for u in users
    ]
    publisher = Publisher(settings=settings)
    try:
        for client in clients:
            await client.wait_for_event("subscription_confirmed")
        for n in range(EVENTS):
            publisher.send_to_user(users[n % 2], {"type": "addressed", "n": n})
        for client in clients:
            await client.wait_for(lambda f: f.get("type") == "addressed" and f["n"] >= EVENTS - 2)
        received = [
            sorted(f["n"] for f in client.frames if f.get("type") == "addressed") for client in clients
        ]
        await asyncio.sleep(0.2)  # anything a replica still had on its way in
        counts = [status(server)["bus_events"] for server in replicas]
    finally:
        publisher.close()
        for client in clients:
            await client.close()
    assert received == [list(range(0, EVENTS, 2)), list(range(1, EVENTS, 2))]
    assert counts == [EVENTS, 0, 0, 0]


async def test_a_replica_stops_reading_a_user_once_its_last_connection_left(
    replicas: list[ServerThread], settings: Settings
) -> None:
    user = f"leaver-{uuid.uuid4().hex[:8]}"
    first = replicas[0]
    publisher = Publisher(settings=settings)
    try:
        async with Client(f"{first.url}/?token={issue_token(user, settings=settings)}") as client:
            await client.wait_for_event("subscription_confirmed")
            publisher.send_to_user(user, {"type": "while_here"})
            await client.wait_for_event("while_here")
        before = status(first)["bus_events"]
        deadline = asyncio.get_running_loop().time() + seconds(5)
        while status(first)["channels"] > 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)  # the channel lingers a second for a reconnecting tab
        for n in range(20):
            publisher.send_to_user(user, {"type": "after_leaving", "n": n})
        await asyncio.sleep(0.2)
        after = status(first)["bus_events"]
    finally:
        publisher.close()
    assert status(first)["channels"] == 1  # broadcasts only
    assert after == before


async def test_channels_nobody_follows_are_dropped_and_only_those(celery_ws_redis_url: str) -> None:
    """A channel nobody follows (unfollowed, or prepared and never followed)
    is unsubscribed a prune or two later; one followed again meanwhile, or
    still followed by a second subscription, stays."""
    prefix = f"cws-prune-{uuid.uuid4().hex[:8]}"
    subscribing = async_client(celery_ws_redis_url, blocking=True)
    reads = async_client(celery_ws_redis_url)
    bus = EventBus(
        subscribing,
        reads,
        lambda entries: None,
        broadcasts=f"{prefix}:broadcasts",
        on_reconnect=lambda: None,
        on_received=lambda n: None,
        catch_up=100,
    )
    left, back, twice, kept, never = (
        f"{prefix}:{name}" for name in ("left", "back", "twice", "kept", "never")
    )
    async with running_bus(bus, subscribing, reads):
        await bus.prepare([never])
        for channel in (left, back, twice, twice, kept):
            bus.follow(channel)
        await bus.ready([left, back, twice, kept], seconds(10))
        for channel in (left, back, twice):
            bus.unfollow(channel)
        bus.follow(back)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds(10)
        while bus.channels != 4 and loop.time() < deadline:  # the broadcasts, back, twice, kept
            await asyncio.sleep(0.1)
        assert bus.channels == 4
        await asyncio.sleep(2.5)  # two more prunes: nothing else goes
        assert bus.channels == 4
        assert {left.encode(), never.encode()}.isdisjoint(bus._followers)
        assert bus._unfollowed == set()
        bus.unfollow(twice)
        assert bus._unfollowed == {twice.encode()}
