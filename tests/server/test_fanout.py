"""One event, many connections: frames are encoded once per fan-out, and every
kind of connection (compressed with either window size, or plain) gets the
same message, event after event; small events skip compression."""

from __future__ import annotations

import asyncio
import json
import os
import zlib

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from celery_ws.exceptions import SettingsError
from celery_ws.settings import Settings
from celery_ws.testing.server import ServerThread
from tests.helpers import seconds
from tests.rawws import TEXT, RawSocket


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


RSV1 = 0x40  # a message's first frame: compressed (RFC 7692)


async def _compressed_flags(server: ServerThread, publisher, user: str, bodies: list[dict]) -> list[bool]:
    """Send ``bodies`` to ``user`` and read them on a connection that
    negotiated permessage-deflate, frame by frame as sent: whether each was
    compressed (each must decode to what was sent either way)."""
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1].strip("/"))
    raw = await RawSocket.upgraded(host, port, headers=[("Sec-WebSocket-Extensions", "permessage-deflate")])
    try:
        raw.send(json.dumps({"action": "subscribe", "user_id": user}))
        flags: dict[int, bool] = {}
        sent = False
        async with asyncio.timeout(seconds(10)):
            while len(flags) < len(bodies):
                first, payload = await raw.recv_frame()
                assert first & 0x0F == TEXT
                compressed = bool(first & RSV1)
                if compressed:  # no context takeover: each message on its own
                    payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
                message = orjson.loads(payload)
                if message["type"] == "subscription_confirmed" and not sent:
                    for body in bodies:
                        publisher.send_to_user(user, body)
                    sent = True
                elif message["type"] == "report":
                    assert message["text"] == bodies[message["n"]]["text"]
                    flags[message["n"]] = compressed
        return [flags[n] for n in range(len(bodies))]
    finally:
        raw.abort()


async def test_small_events_go_out_uncompressed_large_ones_compressed(celery_ws_server, publisher, user):
    """Deflating a few hundred bytes of JSON saves a few dozen and costs more CPU
    than writing them: below ``compression_threshold`` (1 KiB) an event is sent
    plain to a connection that negotiated compression, and it decodes the same."""
    assert celery_ws_server.manager.settings.compression_threshold == 1024
    small = {"type": "report", "n": 0, "text": "ok " * 20}
    large = {"type": "report", "n": 1, "text": "a line of the import's log\n" * 100}
    assert await _compressed_flags(celery_ws_server, publisher, user, [small, large]) == [False, True]


async def test_a_threshold_of_zero_compresses_every_event(celery_ws_settings: Settings, user):
    from celery_ws import Publisher

    settings = celery_ws_settings.model_copy(update={"compression_threshold": 0})
    server = await asyncio.to_thread(lambda: ServerThread(settings).start())
    publisher = Publisher(settings=settings)
    try:
        small = {"type": "report", "n": 0, "text": "ok"}
        assert await _compressed_flags(server, publisher, user, [small]) == [True]
    finally:
        publisher.close()
        await asyncio.to_thread(server.stop)


def test_compression_threshold_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_WS_COMPRESSION_THRESHOLD", "4096")
    assert Settings.load().compression_threshold == 4096
    monkeypatch.setenv("CELERY_WS_COMPRESSION_THRESHOLD", "-1")
    with pytest.raises(SettingsError, match="compression_threshold"):
        Settings.load()
