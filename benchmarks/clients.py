"""A client process: many WebSocket connections to one server, each one user.

    python -m benchmarks.clients KIND URL FIRST COUNT [--token]

Connection i speaks for user ``u{FIRST+i}``. Commands on stdin, one JSON
answer per line on stdout:

* ``connect [K]``: open every connection (or the next K) and subscribe, answer when all are ready;
* ``reset GEN LAT``: count only benchmark events of measurement GEN from now on;
  LAT=1 keeps (seq, latency) pairs;
* ``report``: counts, first and last receive time, latency pairs;
* ``churn K``: close K connections and open them again (the soak);
* ``close``: close every connection.

Every client parses every frame (orjson) whatever the server, so the client
cost is the same for every peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# handshakes in flight per client process; the runner sets BENCH_CONNECT_CONCURRENCY so that
# all processes together keep about 64 in flight: at 256 (64 x 4 processes) the celery-ws
# server's Redis pool (redis-py 8: 100 connections) overflowed on subscribe
# (MaxConnectionsError), and retried connections made N=5,000 take 35-60 s to connect
_CONCURRENCY = int(os.environ.get("BENCH_CONNECT_CONCURRENCY", "64"))


class State:
    def __init__(self) -> None:
        self.gen = -1
        self.lat = False
        self.count = 0
        self.extra = 0  # frames a client received that were not for it (the seed broadcasts everything)
        self.first = 0.0
        self.last = 0.0
        self.pairs: list[tuple[int, float]] = []


class Clients:
    def __init__(self, kind: str, url: str, first: int, count: int, token: bool) -> None:
        self.kind = kind
        self.url = url
        self.users = [f"u{first + i}" for i in range(count)]
        self.token = token
        self.state = State()
        self.conns: dict[str, ClientConnection] = {}
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.failed = 0
        self._settings: Any = None  # loaded once: Settings.load() costs ~2 ms, per connection it was 10 s at N=5000

    # -- connecting ----------------------------------------------------------------

    def _url(self, user: str) -> str:
        if self.kind == "socketio":
            return self.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        if self.token:
            from celery_ws.tokens import issue_token

            if self._settings is None:
                import os

                from celery_ws.settings import Settings

                self._settings = Settings.load(secret=os.environ["BENCH_SECRET"])
            return f"{self.url}?token={issue_token(user, settings=self._settings)}"
        return self.url

    async def _open(self, user: str) -> None:
        for attempt in range(3):
            try:
                ws = await connect(self._url(user), proxy=None, open_timeout=30, max_size=None,
                                   ping_interval=None)
                await self._handshake(ws, user)
                self.conns[user] = ws
                self.readers[user] = asyncio.create_task(self._read(ws, user))
                return
            except (OSError, ConnectionClosed, TimeoutError, asyncio.TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))
        self.failed += 1

    async def _handshake(self, ws: ClientConnection, user: str) -> None:
        async with asyncio.timeout(30):
            if self.kind == "socketio":
                await ws.recv()  # engine.io open packet
                await ws.send("40" + json.dumps({"user": user}))
                while not (await ws.recv()).startswith("40"):
                    pass
            elif self.kind.startswith("celery-ws") and self.token:
                while orjson.loads(await ws.recv()).get("type") != "authenticated":
                    pass
            elif self.kind.startswith("celery-ws"):
                await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
                while orjson.loads(await ws.recv()).get("type") != "subscription_confirmed":
                    pass
            elif self.kind == "seed":
                await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
                while orjson.loads(await ws.recv()).get("type") != "subscription_confirmed":
                    pass
            else:  # relay
                await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
                await ws.recv()

    async def connect_all(self, users: list[str]) -> None:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(user: str) -> None:
            async with gate:
                await self._open(user)

        await asyncio.gather(*(one(u) for u in users))

    # -- receiving ------------------------------------------------------------------

    async def _read(self, ws: ClientConnection, user: str) -> None:
        state = self.state
        socketio = self.kind == "socketio"
        try:
            async for raw in ws:
                now = time.time()
                if socketio:
                    if raw == "2":
                        await ws.send("3")
                        continue
                    if not raw.startswith("42"):
                        continue
                    data = orjson.loads(raw[2:])[1]
                else:
                    data = orjson.loads(raw)
                gen = data.get("bm")
                if gen is None:
                    continue
                to = data.get("to")
                if to is not None and to != user:
                    state.extra += 1
                    continue
                if gen != state.gen:
                    continue
                state.count += 1
                if not state.first:
                    state.first = now
                state.last = now
                if state.lat:
                    state.pairs.append((data["seq"], now - data["ts"]))
        except ConnectionClosed:
            pass

    # -- commands -------------------------------------------------------------------

    async def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words[0] == "connect":  # "connect [K]": the first K users not yet connected (all without K)
            t0 = time.monotonic()
            todo = [u for u in self.users if u not in self.conns]
            if len(words) > 1:
                todo = todo[:int(words[1])]
            await self.connect_all(todo)
            return {"connected": len(self.conns), "failed": self.failed, "secs": time.monotonic() - t0}
        if words[0] == "reset":
            self.state.__init__()  # in place: the readers hold this object
            self.state.gen = int(words[1])
            self.state.lat = words[2] == "1"
            return {"ok": True}
        if words[0] == "report":
            s = self.state
            return {"count": s.count, "extra": s.extra, "first": s.first, "last": s.last, "pairs": s.pairs,
                    "open": sum(1 for ws in self.conns.values() if ws.state.name == "OPEN")}
        if words[0] == "churn":
            victims = random.sample(list(self.conns), min(int(words[1]), len(self.conns)))
            for user in victims:
                ws = self.conns.pop(user)
                await ws.close()
                self.readers.pop(user).cancel()
            self.failed = 0
            await self.connect_all(victims)
            return {"churned": len(victims), "failed": self.failed}
        if words[0] == "close":
            # bounded: some servers take 10+ s to answer 5,000 closing handshakes; what is left is
            # dropped when this process exits (the stack is over, nothing is measured any more)
            try:
                async with asyncio.timeout(3.0):
                    await asyncio.gather(*(ws.close() for ws in self.conns.values()), return_exceptions=True)
            except TimeoutError:
                pass
            self.conns.clear()
            return {"closed": True}
        return {"error": f"unknown command {line!r}"}


async def main(kind: str, url: str, first: int, count: int, token: bool) -> None:
    clients = Clients(kind, url, first, count, token)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=reader, daemon=True).start()
    while (line := await lines.get()) is not None:
        if not line:
            continue
        answer = await clients.command(line)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if line == "close":
            break


if __name__ == "__main__":
    from benchmarks.common import raise_nofile

    raise_nofile()
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], int(args[2]), int(args[3]), "--token" in args))
