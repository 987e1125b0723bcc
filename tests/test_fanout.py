"""One event, many connections: frames are encoded once per fan-out, and every
kind of connection (compressed with either window size, or plain) gets the
same message, event after event."""

from __future__ import annotations

import asyncio
import json
import os

import orjson
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


def _deflate(window_bits: int | None) -> list[ClientPerMessageDeflateFactory]:
    return [ClientPerMessageDeflateFactory(server_max_window_bits=window_bits, client_max_window_bits=True)]


async def test_compressed_and_plain_connections_get_the_same_events(celery_ws_server, publisher, user):
    variants = {"deflate, server's window": _deflate(None), "deflate, window 9": _deflate(9), "plain": []}
    connections = {}
    for name, extensions in variants.items():
        ws = await connect(celery_ws_server.url, compression=None, extensions=extensions or None)
        await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
        assert orjson.loads(await ws.recv())["type"] == "subscription_confirmed"
        connections[name] = ws
    try:
        negotiated = {name: ws.response.headers.get("Sec-WebSocket-Extensions") for name, ws in connections.items()}
        assert "server_max_window_bits=9" in negotiated["deflate, window 9"]
        assert "permessage-deflate" in negotiated["deflate, server's window"]
        assert "server_max_window_bits=9" not in negotiated["deflate, server's window"]
        assert negotiated["plain"] is None
        # compressible, different bodies: a compressed frame sent to the plain connection, or
        # one message's frame reused for the next, fails here
        bodies = [{"type": "report", "n": i, "text": 2 * os.urandom(750).hex()} for i in range(4)]
        publisher.broadcast(bodies[0])
        for body in bodies[1:]:
            publisher.send_to_user(user, body)
        for name, ws in connections.items():
            got = []
            async with asyncio.timeout(10):
                while len(got) < len(bodies):
                    frame = orjson.loads(await ws.recv())
                    if frame["type"] == "report":
                        got.append({k: frame[k] for k in ("type", "n", "text")})
            assert got == bodies, name
    finally:
        for ws in connections.values():
            await ws.close()
