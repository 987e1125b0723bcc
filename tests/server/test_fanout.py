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

from tests.helpers import seconds


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
        negotiated = {
            name: ws.response.headers.get("Sec-WebSocket-Extensions") for name, ws in connections.items()
        }
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
            async with asyncio.timeout(seconds(10)):
                while len(got) < len(bodies):
                    frame = orjson.loads(await ws.recv())
                    if frame["type"] == "report":
                        got.append({k: frame[k] for k in ("type", "n", "text")})
            assert got == bodies, name
    finally:
        for ws in connections.values():
            await ws.close()


async def test_connections_that_keep_compression_context_get_their_own_frames():
    """With context takeover a frame depends on what the connection was sent
    before, so it cannot be shared: each such connection is framed on its own."""
    from websockets.asyncio.server import serve

    from celery_ws.server.fanout import send_text

    connected: dict = {}  # client port -> server side of the connection

    async def handler(ws) -> None:
        connected[ws.remote_address[1]] = ws
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression="deflate") as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as a, connect(f"ws://127.0.0.1:{port}") as b:
            async with asyncio.timeout(seconds(5)):
                while len(connected) < 2:
                    await asyncio.sleep(0.01)
            first, second = connected[a.local_address[1]], connected[b.local_address[1]]
            text = os.urandom(300).hex()
            assert send_text([first], json.dumps({"only": text}).encode()) == 1
            # to both, repeating what only `a` was sent: a frame compressed against
            # a's history would not decode on b
            assert send_text([first, second], json.dumps({"both": text}).encode()) == 2
            assert json.loads(await a.recv()) == {"only": text}
            assert json.loads(await a.recv()) == {"both": text}
            assert json.loads(await b.recv()) == {"both": text}
