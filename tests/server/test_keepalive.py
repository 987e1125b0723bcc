"""Keepalive: one server task pings every connection; a peer that stops
answering is closed with 1011, one that answers stays connected."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

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
