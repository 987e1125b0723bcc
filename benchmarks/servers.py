"""The WebSocket servers under test, one per process.

    python -m benchmarks.servers KIND PORT REDIS_URL [--token] [--profile FILE]

KIND is one of:

* ``celery-ws``: celery_ws.server.WebSocketManager with its defaults (open mode,
  or token mode with ``--token``). Reads the global stream (XREAD).
* ``celery-ws-nodeflate``: the same with ``compression=False``.
* ``seed``: the seed's ``WebSocketManager`` from PyPI ``aiecs`` (the single file
  ``aiecs/infrastructure/messaging/websocket_manager.py`` loaded with importlib).
  It has no Redis side, so a minimal bridge reads Redis pub/sub and calls its
  ``send_to_user()`` / ``broadcast_message()``, as an application using it would.
* ``socketio``: python-socketio ``AsyncServer`` + ``AsyncRedisManager`` on aiohttp;
  each connection joins the room named after its user in the ``connect`` handler.
* ``relay``: the ceiling: a websockets server that reads Redis pub/sub and calls
  ``websockets.broadcast()``: no auth, no history; the only routing is one dict
  lookup (user -> connections), without which addressed events could not be counted.

The process prints one JSON line ``{"ready": port}`` when it listens, then
exits when its stdin closes (the runner owns it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

SEED_CHANNEL = "bench:seed"
RELAY_CHANNEL = "bench:relay"


def load_seed() -> Any:
    """The seed's module, loaded alone (its package pulls in heavy dependencies)."""
    spec = importlib.util.find_spec("aiecs")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("aiecs is not installed: pip install --no-deps aiecs")
    path = Path(spec.submodule_search_locations[0]) / "infrastructure" / "messaging" / "websocket_manager.py"
    if not path.exists():
        raise ImportError(f"aiecs is installed but has no {path}")
    module_spec = importlib.util.spec_from_file_location("seed_websocket_manager", path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _wait_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def reader() -> None:
        for _ in sys.stdin:
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, daemon=True).start()


def _ready(port: int) -> None:
    print(json.dumps({"ready": port, "pid": os.getpid()}), flush=True)


async def run_celery_ws(
    port: int, redis_url: str, token: bool, compression: bool, stop: asyncio.Event
) -> None:
    from celery_ws.server.manager import WebSocketManager

    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "compression": compression,
        "max_connections": 20000,
        "max_connections_per_user": 1000,
    }
    if token:
        overrides["secret"] = os.environ["BENCH_SECRET"]
    manager = WebSocketManager(host="127.0.0.1", port=port, **overrides)
    await manager.start_server()
    _ready(port)
    await stop.wait()
    await manager.stop_server()


async def run_seed(port: int, redis_url: str, stop: asyncio.Event) -> None:
    import redis.asyncio

    seed = load_seed()
    manager = seed.WebSocketManager(host="127.0.0.1", port=port)
    await manager.start_server()
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=None)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(SEED_CHANNEL)
    backlog: deque[dict[str, Any]] = deque()
    wake = asyncio.Event()
    current = {"gen": 0}

    async def read() -> None:
        # drains Redis at once (so Redis never cuts the subscriber off); a new
        # measurement ("gen") discards what is left of the previous one
        while not stop.is_set():
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            data = json.loads(message["data"])
            if data.get("bm", 0) > current["gen"]:
                current["gen"] = data["bm"]
            backlog.append(data)
            wake.set()

    async def send() -> None:
        while not stop.is_set():
            if not backlog:
                wake.clear()
                await wake.wait()
                continue
            data = backlog.popleft()
            if data.get("bm", 0) < current["gen"]:
                continue
            if data.get("to"):
                await manager.send_to_user(data["to"], data)
            else:
                await manager.broadcast_message(data)

    tasks = [asyncio.create_task(read()), asyncio.create_task(send())]
    _ready(port)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await manager.stop_server()


async def run_socketio(port: int, redis_url: str, stop: asyncio.Event) -> None:
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(redis_url), cors_allowed_origins="*"
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> None:
        user = (auth or {}).get("user")
        if user:
            await sio.enter_room(sid, user)

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    _ready(port)
    await stop.wait()
    await runner.cleanup()


async def run_relay(port: int, redis_url: str, stop: asyncio.Event) -> None:
    import redis.asyncio
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    by_user: defaultdict[str, set[ServerConnection]] = defaultdict(set)
    everyone: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        user = json.loads(await ws.recv()).get("user_id", "")
        everyone.add(ws)
        by_user[user].add(ws)
        await ws.send('{"type":"subscribed"}')
        try:
            async for _ in ws:
                pass
        finally:
            everyone.discard(ws)
            by_user[user].discard(ws)

    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=None)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(RELAY_CHANNEL)
    server = await serve(handler, "127.0.0.1", port, compression=None, backlog=4096)

    async def pump() -> None:
        while not stop.is_set():
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            user, _, payload = message["data"].partition(b"\x00")
            broadcast(by_user.get(user.decode(), ()) if user else everyone, payload.decode())

    task = asyncio.create_task(pump())
    _ready(port)
    await stop.wait()
    task.cancel()
    server.close()
    await server.wait_closed()


async def main(kind: str, port: int, redis_url: str, token: bool) -> None:
    stop = asyncio.Event()
    _wait_stdin(asyncio.get_running_loop(), stop)
    if kind == "celery-ws":
        await run_celery_ws(port, redis_url, token, True, stop)
    elif kind == "celery-ws-nodeflate":
        await run_celery_ws(port, redis_url, token, False, stop)
    elif kind == "seed":
        await run_seed(port, redis_url, stop)
    elif kind == "socketio":
        await run_socketio(port, redis_url, stop)
    elif kind == "relay":
        await run_relay(port, redis_url, stop)
    else:
        raise SystemExit(f"unknown server kind {kind}")


if __name__ == "__main__":
    import argparse
    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("seed_websocket_manager").setLevel(logging.CRITICAL)  # one line per closed client
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("port", type=int)
    parser.add_argument("redis_url")
    parser.add_argument("--token", action="store_true")
    parser.add_argument("--profile", help="write a pyinstrument profile (text) here on exit")
    opts = parser.parse_args()
    from benchmarks.common import raise_nofile

    raise_nofile()
    if opts.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        try:
            asyncio.run(main(opts.kind, opts.port, opts.redis_url, opts.token))
        finally:
            profiler.stop()
            Path(opts.profile).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    else:
        asyncio.run(main(opts.kind, opts.port, opts.redis_url, opts.token))
