"""Keepalive: one server task pings every connection, a slice at a time; a
peer that stops answering is closed with 1011, one that answers stays
connected."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections import Counter
from itertools import pairwise
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.protocol import State

from celery_ws.server.keepalive import SLICE, keep_alive
from celery_ws.testing import ServerThread
from tests.helpers import seconds

INTERVAL, TIMEOUT = 0.3, 0.3


async def _silent_peer(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake, then never answers a ping."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


async def _next_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    return head[0] & 0x0F, await reader.readexactly(length)


async def test_a_peer_that_stops_answering_pings_is_closed_and_others_stay(
    celery_ws_settings, publisher, user
):
    server = ServerThread(
        celery_ws_settings.model_copy(update={"ping_interval": INTERVAL, "ping_timeout": TIMEOUT})
    ).start()
    try:
        async with connect(server.url) as healthy:
            await healthy.send(json.dumps({"action": "subscribe", "user_id": user}))
            assert json.loads(await healthy.recv())["type"] == "subscription_confirmed"
            reader, writer = await _silent_peer(server.url)
            pings, close = 0, None
            async with asyncio.timeout(seconds(5 * (INTERVAL + TIMEOUT))):
                while close is None:
                    opcode, payload = await _next_frame(reader)
                    if opcode == 0x9:
                        pings += 1
                    elif opcode == 0x8:
                        close = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
            writer.close()
            assert pings >= 1
            assert close == (1011, "keepalive ping timeout")
            # several ping rounds later the answering client is still served
            await asyncio.sleep(3 * INTERVAL)
            publisher.send_to_user(user, {"type": "still_here"})
            async with asyncio.timeout(seconds(5)):
                while json.loads(await healthy.recv())["type"] != "still_here":
                    pass
    finally:
        server.stop()


class _Peer:
    """What keep_alive() uses of a connection: a pong (or anything) comes back
    after ``rtt`` s, or never when ``rtt`` is None."""

    remote_address = ("127.0.0.1", 0)

    def __init__(self, rtt: float | None) -> None:
        self.rtt = rtt
        self.state = State.OPEN
        self.writable = True
        self.backlog = 0
        self.unanswered_since: float | None = None
        self.pings: list[float] = []
        self.closed: tuple[int, str] | None = None

    def ping_now(self, now: float) -> float:
        self.pings.append(now)
        if self.unanswered_since is None:
            self.unanswered_since = now
        if self.rtt is not None:
            asyncio.get_running_loop().call_later(self.rtt, self._answer)
        return self.unanswered_since

    def _answer(self) -> None:
        self.unanswered_since = None

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.state = State.CLOSING


async def test_a_round_is_spread_over_the_interval_in_slices():
    """Each connection is pinged about once per interval, never more than
    SLICE at one turn of the loop; one that stays silent past the timeout is
    closed, one that answers never is, even when closes shift the others'
    places in the next round."""
    interval, timeout = 0.4, 0.15
    peers = [_Peer(None if n % 10 == 0 else 0.01) for n in range(10 * SLICE)]
    stopping = asyncio.Event()

    def open_peers() -> list[_Peer]:
        return [p for p in peers if p.state is State.OPEN]

    task = asyncio.create_task(keep_alive(open_peers, interval, timeout, stopping))  # type: ignore[arg-type]
    await asyncio.sleep(3.2 * interval)
    stopping.set()
    async with asyncio.timeout(seconds(2)):
        await task
    times = Counter(t for p in peers for t in p.pings)
    assert max(times.values()) <= SLICE
    assert len(times) >= 2 * len(peers) // SLICE  # slices, not one burst per round
    for n, peer in enumerate(peers):
        if n % 10 == 0:
            assert peer.closed == (1011, "keepalive ping timeout")
            assert len(peer.pings) == 1
        else:
            assert peer.closed is None
            assert 2 <= len(peer.pings) <= 4
            gaps = [b - a for a, b in pairwise(peer.pings)]
            assert all(gap > interval / 3 for gap in gaps)
