"""A client process: many WebSocket connections to one server, each one user.

    python -m benchmarks.clients KIND URL FIRST COUNT [--token] [--ttl S] [--resume]

Connection i speaks for user ``u{FIRST+i}``. ``--ttl``: lifetime of the tokens
the process mints (token mode; a fresh one for every connection). ``--resume``
(the soak; token-mode celery-ws): each connection remembers the id of the last
event it received and every reconnect resumes from it (``&last_event_id=``), and
a connection the server closes (4401 at token expiry, or any other code) is
opened again, with a fresh token, resuming. Commands on stdin, one JSON
answer per line on stdout:

* ``connect [K]``: open every connection (or the next K) and subscribe, answer when all are ready;
* ``reset GEN LAT``: count only benchmark events of measurement GEN from now on;
  LAT=1 keeps (seq, latency) pairs;
* ``report``: counts, first and last receive time, latency pairs;
* ``churn K``: close K connections and open them again (the soak), with any
  connection a failed reconnect left closed;
* ``stall [USER ...]``: (token mode) first end the stalled connections opened by the
  previous ``stall``, then open one per USER that authenticates and then never
  reads; answers what became of the ended ones (see :meth:`Clients.stall`);
* ``close``: close every connection.

Every client parses every frame (orjson) whatever the server, so the client
cost is the same for every peer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

# handshakes in flight per client process; the runner sets BENCH_CONNECT_CONCURRENCY so that
# all processes together keep about 64 in flight: at 256 (64 x 4 processes) the celery-ws
# server's Redis pool (redis-py 8: 100 connections) overflowed on subscribe
# (MaxConnectionsError), and retried connections made N=5,000 take 35-60 s to connect
_CONCURRENCY = int(os.environ.get("BENCH_CONNECT_CONCURRENCY", "64"))

CLOSE_UNAUTHORIZED = 4401  # token missing, invalid or expired (celery_ws.protocol)
# a --resume process reopens at most this many connections per user the server closed,
# over its life (a server that closes every connection at once must not make a loop)
_RECONNECTS_PER_USER = 100
_STALLED_RCVBUF = 4096  # a stalled socket's receive buffer: the kernel takes few bytes for it
_STALLED_DRAIN_S = 3.0  # how long ending a stalled socket reads, waiting for the server's end of it
_STALLED_DRAIN_BYTES = 64 << 20


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
    def __init__(
        self,
        kind: str,
        url: str,
        first: int,
        count: int,
        token: bool,
        *,
        ttl: float = 3600.0,
        resume: bool = False,
    ) -> None:
        self.kind = kind
        self.url = url
        self.users = [f"u{first + i}" for i in range(count)]
        self.token = token
        self.ttl = ttl
        self.resume = resume and token and kind.startswith("celery-ws")
        self.state = State()
        self.conns: dict[str, ClientConnection] = {}
        self.readers: dict[str, asyncio.Task[None]] = {}
        self.failed = 0
        self._settings: Any = (
            None  # loaded once: Settings.load() costs ~2 ms, per connection it was 10 s at N=5000
        )
        self._gate: asyncio.Semaphore | None = None
        # --resume
        self.last_ids: dict[str, str] = {}  # user -> id of the last event its connection received
        self.reconnecting: set[str] = set()  # users whose connection the server closed, being reopened
        self.closing = False
        self.reconnect_budget = _RECONNECTS_PER_USER * max(1, count)
        self.soak: Counter[str] = Counter()  # resumes, recovered, reconnects, ...
        self.server_closes: Counter[str] = Counter()  # close code -> connections the server closed
        # stall
        self.stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.stall_totals: Counter[str] = Counter()

    # -- connecting ----------------------------------------------------------------

    def _mint(self, user: str) -> str:
        from celery_ws.tokens import issue_token

        if self._settings is None:
            from celery_ws.settings import Settings

            self._settings = Settings.load(secret=os.environ["BENCH_SECRET"])
        return issue_token(user, ttl=self.ttl, settings=self._settings)

    def _url(self, user: str, last_event_id: str | None = None) -> str:
        if self.kind == "socketio":
            return self.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        if self.token:
            url = f"{self.url}?token={self._mint(user)}"
            return url + f"&last_event_id={last_event_id}" if last_event_id else url
        return self.url

    async def _open(self, user: str, resume: bool = False) -> bool:
        for attempt in range(3):
            last = self.last_ids.get(user) if resume else None
            try:
                ws = await connect(
                    self._url(user, last), proxy=None, open_timeout=30, max_size=None, ping_interval=None
                )
                try:
                    await self._handshake(ws, user)
                except BaseException:
                    ws.transport.abort()  # no half-open connection left behind a failed or cancelled handshake
                    raise
                self.conns[user] = ws
                self.readers[user] = asyncio.create_task(self._read(ws, user))
                if last is not None:
                    self.soak["resumes"] += 1
                return True
            except (OSError, ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))
        self.failed += 1
        return False

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
            elif self.kind.startswith("celery-ws") or self.kind == "seed":
                await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
                while orjson.loads(await ws.recv()).get("type") != "subscription_confirmed":
                    pass
            else:  # relay
                await ws.send(json.dumps({"action": "subscribe", "user_id": user}))
                await ws.recv()

    @property
    def gate(self) -> asyncio.Semaphore:
        """Handshakes in flight in this process, whoever opens them (connect, churn, reconnects)."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(_CONCURRENCY)
        return self._gate

    async def connect_all(self, users: list[str], resume: bool = False) -> None:
        gate = self.gate

        async def one(user: str) -> None:
            async with gate:
                await self._open(user, resume)

        await asyncio.gather(*(one(u) for u in users))

    # -- receiving ------------------------------------------------------------------

    async def _read(self, ws: ClientConnection, user: str) -> None:
        state = self.state
        socketio = self.kind == "socketio"
        track = self.resume
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
                if track:
                    event_id = data.get("id")
                    if event_id is not None:
                        self.last_ids[user] = event_id
                    elif data.get("type") == "subscription_confirmed" and "recovered" in data:
                        self.soak["recovered" if data["recovered"] else "not_recovered"] += 1
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
        if track and not self.closing and self.conns.get(user) is ws:
            await self._reconnect(ws, user)

    async def _reconnect(self, ws: ClientConnection, user: str) -> None:
        """The server closed this connection (churn and close pop it first): open
        it again with a fresh token, resuming from the last event it received."""
        code = ws.close_code
        self.server_closes[str(code)] += 1
        if self.reconnect_budget <= 0:
            self.soak["reconnects_skipped"] += 1
            self.conns.pop(user, None)
            return
        self.reconnect_budget -= 1
        self.reconnecting.add(user)
        try:
            if code != CLOSE_UNAUTHORIZED:  # expiry is routine; anything else may be the server in trouble
                await asyncio.sleep(0.5)
            self.soak["reconnects"] += 1
            async with self.gate:
                if self.closing:
                    return
                if not await self._open(user, resume=True):
                    self.soak["reconnects_failed"] += 1
                    if self.conns.get(user) is ws:
                        del self.conns[user]
        finally:
            self.reconnecting.discard(user)

    # -- stalled connections (token mode) ----------------------------------------------

    async def _stall_open(self, user: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A bare socket that upgrades, reads up to the ``authenticated`` frame (token
        mode: the connection follows its user from then on) and then reads nothing more.

        Frames before ``authenticated`` are counted (``before_authenticated``): the
        server has been seen to send a live event to the user first."""
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _STALLED_RCVBUF)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(10):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
                reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        except BaseException:
            sock.close()
            raise
        try:
            async with asyncio.timeout(10):
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    (
                        f"GET /?token={self._mint(user)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    ).encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                if head.split(b" ", 2)[1] != b"101":
                    raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                # no extension was offered: frames are plain
                for before in range(64):
                    first, second = await reader.readexactly(2)
                    size = second & 0x7F
                    if size == 126:
                        size = int.from_bytes(await reader.readexactly(2), "big")
                    elif size == 127:
                        size = int.from_bytes(await reader.readexactly(8), "big")
                    payload = await reader.readexactly(size)
                    if first & 0x0F == 0x8:  # close
                        raise ConnectionError(f"closed before authenticated: {payload[:80]!r}")
                    if first & 0x0F == 0x1 and orjson.loads(payload).get("type") == "authenticated":
                        if before:
                            self.stall_totals["before_authenticated"] += 1
                        break
                else:
                    raise ConnectionError("no authenticated frame in the first 64")
        except BaseException:
            writer.transport.abort()
            raise
        writer.transport.pause_reading()  # from now on the bytes pile up in the kernel, then in the server
        return reader, writer

    async def _stall_end(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """``ended_by_server`` when the server had ended the connection (reading
        again reaches its end: the server aborted or closed it, and its kernel
        sends what it had queued, then FIN or RST), else ``closed_by_client`` (still
        open after reading for a while: this client aborts it)."""
        if writer.transport.is_closing():
            return "ended_by_server"
        writer.transport.resume_reading()
        got = 0
        try:
            async with asyncio.timeout(_STALLED_DRAIN_S):
                while got < _STALLED_DRAIN_BYTES:
                    chunk = await reader.read(1 << 20)
                    if not chunk:
                        return "ended_by_server"
                    got += len(chunk)
        except (ConnectionError, OSError):
            return "ended_by_server"
        except TimeoutError:
            pass
        writer.transport.abort()
        return "closed_by_client"

    async def stall(self, users: list[str]) -> dict[str, Any]:
        """End the previous stalled connections (what had the server done with
        them?), then open one per user in ``users`` that never reads."""
        ended = Counter(await asyncio.gather(*(self._stall_end(r, w) for r, w in self.stalled)))
        self.stalled = []
        opened = await asyncio.gather(*(self._stall_open(u) for u in users), return_exceptions=True)
        errors = [repr(o) for o in opened if isinstance(o, BaseException)]
        self.stalled = [o for o in opened if not isinstance(o, BaseException)]
        self.stall_totals.update(ended)
        self.stall_totals["opened"] += len(self.stalled)
        self.stall_totals["open_failed"] += len(errors)
        return {
            "opened": len(self.stalled),
            "open_failed": len(errors),
            "errors": errors[:3],
            **ended,
            "totals": dict(self.stall_totals),
        }

    # -- commands -------------------------------------------------------------------

    async def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words[0] == "connect":  # "connect [K]": the first K users not yet connected (all without K)
            t0 = time.monotonic()
            todo = [u for u in self.users if u not in self.conns]
            if len(words) > 1:
                todo = todo[: int(words[1])]
            await self.connect_all(todo)
            return {"connected": len(self.conns), "failed": self.failed, "secs": time.monotonic() - t0}
        if words[0] == "reset":
            self.state.__init__()  # in place: the readers hold this object
            self.state.gen = int(words[1])
            self.state.lat = words[2] == "1"
            return {"ok": True}
        if words[0] == "report":
            s = self.state
            answer = {
                "count": s.count,
                "extra": s.extra,
                "first": s.first,
                "last": s.last,
                "pairs": s.pairs,
                "open": sum(1 for ws in self.conns.values() if ws.state.name == "OPEN"),
            }
            if self.resume:
                answer["soak"] = dict(self.soak)
                answer["server_closes"] = dict(self.server_closes)
                answer["reconnecting"] = len(self.reconnecting)
            return answer
        if words[0] == "churn":
            # not a connection being reopened after the server closed it: its reader owns it
            steady = [u for u in self.conns if u not in self.reconnecting]
            victims = random.sample(steady, min(int(words[1]), len(steady)))
            for user in victims:
                ws = self.conns.pop(user)
                await ws.close()
                self.readers.pop(user).cancel()
            # and any connection a failed reconnect left closed
            victims += [
                u
                for u in self.users
                if u not in self.conns and u not in self.reconnecting and u not in victims
            ]
            self.failed = 0
            await self.connect_all(victims, resume=self.resume)
            return {"churned": len(victims), "failed": self.failed}
        if words[0] == "stall":
            if not self.token:
                return {"error": "stall needs token mode"}
            return await self.stall(words[1:])
        if words[0] == "close":
            self.closing = True
            for _, writer in self.stalled:
                writer.transport.abort()
            self.stalled = []
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


async def main(
    kind: str, url: str, first: int, count: int, token: bool, ttl: float = 3600.0, resume: bool = False
) -> None:
    clients = Clients(kind, url, first, count, token, ttl=ttl, resume=resume)
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
    ttl = float(args[args.index("--ttl") + 1]) if "--ttl" in args else 3600.0
    asyncio.run(
        main(args[0], args[1], int(args[2]), int(args[3]), "--token" in args, ttl, "--resume" in args)
    )
