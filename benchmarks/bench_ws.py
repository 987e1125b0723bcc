"""Server-side benchmarks: fan-out, latency, memory, scale-out, soak.

Each stack is one server process (or two replicas) and several client
processes on loopback, fed through Redis by a publisher in this process.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

from .common import PY, ROOT, SECRET, Child, CpuMeter, percentile, rss, summary
from .servers import RELAY_CHANNEL, SEED_CHANNEL

PAD = "x" * 64
CONNECT_IN_FLIGHT = 64  # handshakes in flight over all client processes of a stack (see clients.py)


def payload(gen: int, seq: int, to: str | None) -> dict[str, Any]:
    return {"type": "bench", "bm": gen, "seq": seq, "ts": time.time(), "to": to, "pad": PAD}


class Pub:
    """Emits benchmark events the way each peer's users do, from a worker-like process."""

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self.redis = redis.Redis.from_url(redis_url)
        self.emitter = None
        if kind.startswith("celery-ws"):
            from celery_ws import Publisher
            from celery_ws.settings import Settings

            # token mode, as in production: nothing is written for open mode's firehose
            self.settings = Settings.load(redis_url=redis_url, secret=SECRET)
            self.publisher = Publisher(settings=self.settings)
        elif kind == "socketio":
            import socketio

            self.manager = socketio.RedisManager(redis_url, write_only=True)

    def worker_emitter(self) -> Any:
        """celery-ws' per-process emitter (the path ``step_result()`` takes)."""
        if self.emitter is None:
            from celery_ws.worker.emitter import Emitter

            self.emitter = Emitter(self.settings)
        return self.emitter

    def send(self, gen: int, targets: list[str | None], start_seq: int = 0) -> None:
        """Pipelined where the peer allows it (socketio's write-only manager does not)."""
        if self.kind.startswith("celery-ws"):
            from celery_ws.protocol import message_event

            self.publisher.emit_many(
                [message_event(payload(gen, start_seq + i, to), user_id=to) for i, to in enumerate(targets)]
            )
        elif self.kind == "socketio":
            for i, to in enumerate(targets):
                self.manager.emit("bench", payload(gen, start_seq + i, to), room=to)
        else:
            channel = SEED_CHANNEL if self.kind == "seed" else RELAY_CHANNEL
            with self.redis.pipeline(transaction=False) as pipe:
                for i, to in enumerate(targets):
                    body = json.dumps(payload(gen, start_seq + i, to))
                    pipe.publish(channel, body if self.kind == "seed" else f"{to or ''}\x00{body}")
                pipe.execute()

    def send_one_worker(self, gen: int, seq: int, to: str | None) -> None:
        """One event as a worker emits it, for latency."""
        if self.kind.startswith("celery-ws"):
            from celery_ws.protocol import message_event

            self.worker_emitter().emit(message_event(payload(gen, seq, to), user_id=to))
        else:
            self.send(gen, [to], seq)

    def close(self) -> None:
        self.redis.close()


class Stack:
    """Server process(es) plus client processes with N connections in total."""

    def __init__(
        self,
        kind: str,
        redis_url: str,
        n: int,
        *,
        procs: int | None = None,
        token: bool = False,
        replicas: int = 1,
        profile: str | None = None,
        initial: int | None = None,
        server_env: dict[str, str] | None = None,
        client_args: list[str] | None = None,
        server_root: Path = ROOT,
        on_initial: Callable[[Stack], None] | None = None,
        own_process: int = 0,
    ) -> None:
        """``initial``: connect that many first and read RSS (``rss_initial``), then
        call ``on_initial(stack)`` (a measurement at that size), then connect the rest (memory).
        ``server_env``: more environment for the servers (``CELERY_WS_*`` settings);
        ``client_args``: more arguments for the client processes (``--ttl``, ``--resume``);
        ``server_root``: the source tree the servers run (a baseline checkout);
        ``own_process``: the first that many connections (the measured users) get a
        client process of their own, as a person's browser is not one of thousands of
        connections in a process: they connect first, with ``initial``."""
        from celery_ws.testing.redis_server import free_port

        self.kind, self.redis_url, self.n, self.token = kind, redis_url, n, token
        self.procs = procs or max(1, min(4, math.ceil(n / 1250)))
        # [first, count) of each client process
        per = math.ceil((n - own_process) / self.procs)
        ranges = [(own_process + p * per, min(per, n - own_process - p * per)) for p in range(self.procs)]
        if own_process:
            ranges.insert(0, (0, own_process))
        self.servers: list[Child] = []
        self.clients: list[Child] = []
        env = {
            "BENCH_SECRET": SECRET,
            "BENCH_CONNECT_CONCURRENCY": str(max(8, CONNECT_IN_FLIGHT // self.procs)),
        }
        self.env = env
        for r in range(replicas):
            port = free_port()
            args = [PY, "-m", "benchmarks.servers", kind, str(port), redis_url]
            if token:
                args.append("--token")
            if profile and r == 0:
                args += ["--profile", profile]
            child = Child(args, {**env, **(server_env or {})}, root=server_root)
            child.read(60)
            child.port = port  # type: ignore[attr-defined]
            self.servers.append(child)
        time.sleep(0.5)
        self.rss_before = sum(rss(s.pid) for s in self.servers)
        t0 = time.monotonic()
        for p, (first, count) in enumerate(ranges):
            server = self.servers[p % replicas]
            args = [
                PY,
                "-m",
                "benchmarks.clients",
                kind,
                f"ws://127.0.0.1:{server.port}",
                str(first),
                str(count),
            ]
            if token:
                args.append("--token")
            self.clients.append(Child(args + list(client_args or ()), env))
        self.rss_initial = None
        self.connected_initial = 0
        if initial and initial < n:
            rest = initial - own_process
            shares = [rest // self.procs + (1 if p < rest % self.procs else 0) for p in range(self.procs)]
            if own_process:
                shares.insert(0, own_process)
            for c, k in zip(self.clients, shares, strict=True):
                c.proc.stdin.write(f"connect {k}\n")  # all processes connect at once
                c.proc.stdin.flush()
            answers = [c.read(600) for c in self.clients]
            self.connected_initial = sum(a["connected"] for a in answers)
            time.sleep(1.0)
            self.rss_initial = sum(rss(s.pid) for s in self.servers)
            if on_initial is not None:
                on_initial(self)
        for c in self.clients:
            c.proc.stdin.write("connect\n")
            c.proc.stdin.flush()
        answers = [c.read(600) for c in self.clients]
        self.connect_secs = time.monotonic() - t0
        self.connected = sum(a["connected"] for a in answers)
        self.failed = sum(a["failed"] for a in answers)
        time.sleep(1.0)
        self.rss_after = sum(rss(s.pid) for s in self.servers)

    @property
    def server_pids(self) -> list[int]:
        return [s.pid for s in self.servers]

    @property
    def client_pids(self) -> list[int]:
        return [c.pid for c in self.clients]

    def reset(self, gen: int, lat: bool = False) -> None:
        for c in self.clients:
            c.ask(f"reset {gen} {int(lat)}")

    def reports(self) -> list[dict[str, Any]]:
        return [c.ask("report") for c in self.clients]

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                c.ask("close", timeout=30)
            c.stop()
        for s in self.servers:
            s.stop()


def _drain(stack: Stack, expected: int, timeout: float, idle: float = 1.5) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last_total, last_change = -1, time.monotonic()
    while True:
        reports = stack.reports()
        total = sum(r["count"] for r in reports)
        now = time.monotonic()
        if total >= expected or now > deadline:
            return reports
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change > idle:
            return reports
        time.sleep(0.1)


def settle(stack: Stack, timeout: float = 6.0, quiet: float = 0.4) -> float:
    """Wait (bounded) until the clients stop receiving frames of earlier measurements.

    The seed sends every addressed event to every connection: after the addressed
    frames arrived, the rest of its last broadcasts is still on its way and would
    load the next measurement."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last, changed = -1, t0
    while time.monotonic() < deadline:
        extra = sum(r["extra"] for r in stack.reports())
        now = time.monotonic()
        if extra != last:
            last, changed = extra, now
        elif now - changed >= quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


# The seed sends each addressed event to all N connections (it has no user map):
# a run of E addressed events costs it E x N frames. Its addressed runs send
# SEED_FRAME_BUDGET // N events (at least 10), so the run ends within seconds
# instead of timing out (the rate is the same, the backlog smaller), and are not
# run at N > SEED_ADDRESSED_MAX_N.
SEED_FRAME_BUDGET = 20_000
SEED_ADDRESSED_MAX_N = 1000
SEED_ADDRESSED_SKIP = (
    "not run: the seed sends every addressed event to all {n:,} connections "
    "(a 10-event run is {frames:,} frames; at N=1,000 it delivered "
    "{rate} addressed msgs/s)"
)
SEED_LAT_10MS_DURATION = (
    0.3  # 30 events; the seed cannot sustain the 10 ms load, its backlog grows with the run
)


_GEN = [0]


def next_gen() -> int:
    _GEN[0] += 1
    return _GEN[0]


def fanout_once(stack: Stack, pub: Pub, mode: str, deliveries: int, drain: float) -> dict[str, Any]:
    """Send as fast as the publisher can; delivered msgs/s from first send to last receive."""
    n = stack.n
    gen = next_gen()
    stack.reset(gen)
    if mode == "broadcast":
        events = max(3, deliveries // n)
        targets: list[str | None] = [None] * events
        expected = events * n
    else:
        events = deliveries
        if stack.kind == "seed":
            events = min(deliveries, max(10, SEED_FRAME_BUDGET // n))
        targets = [f"u{i % n}" for i in range(events)]
        expected = events
    srv, cli = CpuMeter(stack.server_pids), CpuMeter(stack.client_pids)
    t0 = time.time()
    for start in range(0, events, 500):
        pub.send(gen, targets[start : start + 500], start)
    send_secs = time.time() - t0
    reports = _drain(stack, expected, drain)
    delivered = sum(r["count"] for r in reports)
    last = max((r["last"] for r in reports if r["last"]), default=0.0)
    # nothing delivered: CPU over the whole wait rather than over an empty window
    waited = time.time() - t0
    active = last - t0 if last and last - t0 > 0.001 else waited
    settled = settle(stack) if stack.kind == "seed" else 0.0
    return {
        "mode": mode,
        "events": events,
        "expected": expected,
        "delivered": delivered,
        "loss": 1 - delivered / expected,
        "msgs_per_s": delivered / active,
        "secs": active,
        "send_per_s": events / send_secs if send_secs else None,
        "server_cpu": 100 * srv.seconds() / active,
        "client_cpu": 100 * cli.seconds() / active,
        "extra_frames": sum(r["extra"] for r in reports),
        "settle_s": settled,
    }


def latency_once(
    stack: Stack, pub: Pub, *, interval: float, duration: float, broadcast: bool, user: str | None = None
) -> dict[str, Any]:
    """One event every ``interval`` s (broadcast to all, or to one user round-robin,
    or all to ``user``)."""
    gen = next_gen()
    stack.reset(gen, lat=True)
    srv, cli = CpuMeter(stack.server_pids), CpuMeter(stack.client_pids)
    count = int(duration / interval)
    t0 = time.monotonic()
    for seq in range(count):
        pause = t0 + seq * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        pub.send_one_worker(gen, seq, None if broadcast else user or f"u{seq % stack.n}")
    # the last event gets its interval too before the clients are asked for their
    # reports: a client busy answering one receives an event in flight late
    time.sleep(max(0.0, t0 + count * interval - time.monotonic()))
    expected = count * (stack.n if broadcast else 1)
    reports = _drain(stack, expected, 10.0)
    wall = (
        time.monotonic() - t0
    )  # CPU over sending and draining (an overloaded server works on after the last send)
    pairs = [tuple(p) for r in reports for p in r["pairs"]]
    lats = [lat for _, lat in pairs]
    by_event: dict[int, list[float]] = {}
    for seq, lat in pairs:
        by_event.setdefault(seq, []).append(lat)
    firsts = [min(v) for v in by_event.values()]
    lasts = [max(v) for v in by_event.values()]
    delivered = len(lats)
    return {
        "interval_ms": interval * 1000,
        "broadcast": broadcast,
        "events": count,
        "expected": expected,
        "delivered": delivered,
        "loss": 1 - delivered / expected if expected else 0,
        "p50_ms": 1000 * (percentile(lats, 50) or 0),
        "p99_ms": 1000 * (percentile(lats, 99) or 0),
        "max_ms": 1000 * (max(lats) if lats else 0),
        "first_client_p50_ms": 1000 * (percentile(firsts, 50) or 0),
        "last_client_p50_ms": 1000 * (percentile(lasts, 50) or 0),
        "last_client_p99_ms": 1000 * (percentile(lasts, 99) or 0),
        "server_cpu": 100 * srv.seconds() / wall,
        "client_cpu": 100 * cli.seconds() / wall,
        "duration_s": duration,
        "settle_s": settle(stack) if stack.kind == "seed" else 0.0,
    }


def _summarise(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in keys:
        out[key] = summary([r[key] for r in runs if r.get(key) is not None])
    return out


FANOUT_KEYS = ["msgs_per_s", "loss", "server_cpu", "client_cpu", "send_per_s"]
LAT_KEYS = [
    "p50_ms",
    "p99_ms",
    "max_ms",
    "first_client_p50_ms",
    "last_client_p50_ms",
    "last_client_p99_ms",
    "loss",
    "server_cpu",
    "client_cpu",
]


def run_fanout(
    redis_url: str,
    kinds: list[str],
    sizes: list[int],
    repeats: int,
    deliveries: dict[str, int],
    lat_n: int,
    lat_duration: float,
    log: Any,
) -> dict[str, Any]:
    """Fan-out at every size, and latency at ``lat_n``, on the same connections."""
    results: dict[str, Any] = {"fanout": {}, "latency": {}, "open_rss": {}}
    for n in sizes:
        for kind in kinds:
            log(f"fan-out: {kind} N={n}: connecting")
            stack = Stack(kind, redis_url, n, token=kind.startswith("celery-ws"))
            pub = Pub(kind, redis_url)
            try:
                log(f"  {stack.connected} connected in {stack.connect_secs:.1f} s, {stack.failed} failed")
                results["open_rss"].setdefault(kind, {})[str(n)] = {
                    "per_conn_kib": (stack.rss_after - stack.rss_before) / max(1, stack.connected) / 1024,
                    "rss_mib": stack.rss_after / 2**20,
                }
                entry = results["fanout"].setdefault(kind, {}).setdefault(str(n), {})
                entry["connected"], entry["failed"] = stack.connected, stack.failed
                for mode in ("addressed", "broadcast"):
                    if kind == "seed" and mode == "addressed" and n > SEED_ADDRESSED_MAX_N:
                        prev = (
                            results["fanout"]["seed"].get(str(SEED_ADDRESSED_MAX_N), {}).get("addressed", {})
                        )
                        rate = prev.get("msgs_per_s", {}).get("median")
                        entry[mode] = {
                            "not_run": SEED_ADDRESSED_SKIP.format(
                                n=n, frames=10 * n, rate=f"{rate:,.0f}" if rate is not None else "a few"
                            )
                        }
                        log(f"  {mode}: {entry[mode]['not_run']}")
                        continue
                    runs = [
                        fanout_once(stack, pub, mode, deliveries[mode], drain=8.0) for _ in range(repeats)
                    ]
                    entry[mode] = _summarise(runs, FANOUT_KEYS)
                    log(
                        f"  {mode}: {entry[mode]['msgs_per_s']['median']:,.0f} msg/s, loss "
                        f"{entry[mode]['loss']['median']:.3%}, server {entry[mode]['server_cpu']['median']:.0f}% "
                        f"clients {entry[mode]['client_cpu']['median']:.0f}%"
                    )
                if n == lat_n:
                    lat = results["latency"].setdefault(kind, {})
                    # each broadcast is N samples; addressed events one each, so their window is
                    # twice as long (400 samples at 2 s: p99 is the 4th worst, not the 2nd)
                    for name, interval, bcast, duration in (
                        ("200ms_broadcast", 0.2, True, lat_duration),
                        ("10ms_addressed", 0.01, False, 2 * lat_duration),
                    ):
                        if kind == "seed" and not bcast:
                            duration = min(duration, SEED_LAT_10MS_DURATION)
                        runs = [
                            latency_once(stack, pub, interval=interval, duration=duration, broadcast=bcast)
                            for _ in range(repeats)
                        ]
                        lat[name] = _summarise(runs, LAT_KEYS)
                        log(
                            f"  latency {name}: p50 {lat[name]['p50_ms']['median']:.2f} ms "
                            f"p99 {lat[name]['p99_ms']['median']:.2f} ms max {lat[name]['max_ms']['median']:.1f} ms"
                        )
            finally:
                pub.close()
                stack.close()
    return results


def run_scaleout(
    redis_url: str, sizes: list[int], repeats: int, deliveries: dict[str, int], log: Any
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in sizes:
        stack = Stack(
            "celery-ws", redis_url, n, token=True, replicas=2, procs=max(2, min(4, math.ceil(n / 1250)))
        )
        pub = Pub("celery-ws", redis_url)
        try:
            entry = results.setdefault(str(n), {"connected": stack.connected})
            for mode in ("addressed", "broadcast"):
                runs = [fanout_once(stack, pub, mode, deliveries[mode], drain=8.0) for _ in range(repeats)]
                entry[mode] = _summarise(runs, FANOUT_KEYS)
                log(
                    f"scale-out N={n} {mode}: {entry[mode]['msgs_per_s']['median']:,.0f} msg/s "
                    f"(2 replicas, server CPU {entry[mode]['server_cpu']['median']:.0f}% total)"
                )
        finally:
            pub.close()
            stack.close()
    return results


def run_memory(
    redis_url: str, kinds: list[tuple[str, bool, list[int]]], repeats: int, log: Any
) -> dict[str, Any]:
    """Server RSS growth per idle, subscribed connection (token mode for celery-ws).

    One stack per repeat: it connects sizes[0] connections (reading), then grows
    to sizes[-1] (reading), so each size has ``repeats`` readings from as many
    server processes, at the cost of one stack of the largest size per repeat."""
    results: dict[str, Any] = {}
    for kind, token, sizes in kinds:
        small, big = sizes[0], sizes[-1]
        label = kind + (" (token)" if token else "")
        runs: dict[int, list[dict[str, Any]]] = {small: [], big: []}
        for _ in range(repeats):
            stack = Stack(kind, redis_url, big, token=token, initial=small if big > small else None)
            try:
                if stack.rss_initial is not None:
                    runs[small].append(
                        {
                            "per_conn_kib": (stack.rss_initial - stack.rss_before)
                            / max(1, stack.connected_initial)
                            / 1024,
                            "rss_mib": stack.rss_initial / 2**20,
                            "baseline_mib": stack.rss_before / 2**20,
                            "connected": stack.connected_initial,
                        }
                    )
                runs[big].append(
                    {
                        "per_conn_kib": (stack.rss_after - stack.rss_before) / max(1, stack.connected) / 1024,
                        "rss_mib": stack.rss_after / 2**20,
                        "baseline_mib": stack.rss_before / 2**20,
                        "connected": stack.connected,
                        "connect_s": stack.connect_secs,
                    }
                )
            finally:
                stack.close()
        for n in sorted({small, big}):
            if runs[n]:
                results.setdefault(label, {})[str(n)] = _summarise(
                    runs[n], ["per_conn_kib", "rss_mib", "baseline_mib"]
                )
                log(f"memory {label} N={n}: {results[label][str(n)]['per_conn_kib']['median']:.1f} KiB/conn")
    return results


# Idle connections at scale (``--only idle``): one server process holding
# IDLE_SIZES[-1] idle token-mode connections, and what holding them costs a
# client that is sent events.
IDLE_SIZES = (1000, 15000)
IDLE_USER = "u0"  # in a client process of its own (own_process=1), connected at both sizes
IDLE_INTERVAL = 0.01  # s between two events to IDLE_USER: 2,000 samples in a 20-s window
# s of events at each size: one keepalive interval (20 s by default), so each
# window holds one round of pings to every connection, as any 20 s of a real day would
IDLE_DURATION = 20.0


def _idle_latency(
    stack: Stack,
    *,
    n: int,
    pub: Pub,
    out: dict[int, dict[str, Any]],
    label: str,
    interval: float,
    duration: float,
    log: Any,
) -> None:
    """Events to :data:`IDLE_USER` while ``stack`` holds ``n`` connections,
    after 1 s of them not counted (the worker's emitter starts with the first)."""
    latency_once(stack, pub, interval=interval, duration=1.0, broadcast=False, user=IDLE_USER)
    out[n] = r = latency_once(
        stack, pub, interval=interval, duration=duration, broadcast=False, user=IDLE_USER
    )
    log(
        f"  {label} N={n:,}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms max {r['max_ms']:.1f} ms, "
        f"{r['delivered']}/{r['expected']} delivered, server CPU {r['server_cpu']:.0f}%"
    )


def run_idle(
    redis_url: str,
    sizes: tuple[int, int],
    repeats: int,
    log: Any,
    *,
    duration: float = IDLE_DURATION,
    interval: float = IDLE_INTERVAL,
    trees: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Server RSS growth per idle token-mode connection, and the delivery latency
    of events addressed to one subscribed client, at ``sizes[0]`` and ``sizes[1]``
    connections held by one server process.

    One stack per repeat (and per tree): it connects ``sizes[0]`` connections,
    reads RSS, sends one event every ``interval`` s for ``duration`` s to
    :data:`IDLE_USER` (through the worker's emitter, emit call to receive), then
    connects the rest, reads RSS and sends the same events again. ``trees``:
    label -> source tree the server runs (a baseline worktree), interleaved by
    repeat; the default is this tree as ``celery-ws``."""
    small, big = sizes
    trees = trees or {"celery-ws": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    for repeat in range(repeats):
        for label, root in trees.items():
            pub = Pub("celery-ws", redis_url)
            lat: dict[int, dict[str, Any]] = {}
            measure = functools.partial(
                _idle_latency, pub=pub, out=lat, label=label, interval=interval, duration=duration, log=log
            )
            log(f"idle: {label} repeat {repeat + 1}: connecting {small:,}, then {big:,}")
            stack = Stack(
                "celery-ws",
                redis_url,
                big,
                token=True,
                initial=small,
                own_process=1,  # IDLE_USER's connection
                server_root=root,
                on_initial=functools.partial(measure, n=small),
            )
            try:
                measure(stack, n=big)
                run = {
                    "connected_small": stack.connected_initial,
                    "connected": stack.connected,
                    "failed": stack.failed,
                    "connect_s": stack.connect_secs,
                    "baseline_mib": stack.rss_before / 2**20,
                    "rss_small_mib": (stack.rss_initial or 0) / 2**20,
                    "rss_big_mib": stack.rss_after / 2**20,
                    "kib_small": ((stack.rss_initial or 0) - stack.rss_before)
                    / max(1, stack.connected_initial)
                    / 1024,
                    "kib_big": (stack.rss_after - stack.rss_before) / max(1, stack.connected) / 1024,
                }
                for n, key in ((small, "small"), (big, "big")):
                    for k in ("p50_ms", "p99_ms", "max_ms", "loss", "server_cpu", "delivered", "expected"):
                        run[f"{k}_{key}"] = lat[n][k]
                run["p99_ratio"] = run["p99_ms_big"] / run["p99_ms_small"] if run["p99_ms_small"] else None
                run["p50_ratio"] = run["p50_ms_big"] / run["p50_ms_small"] if run["p50_ms_small"] else None
                runs[label].append(run)
                log(
                    f"  {label}: {run['kib_small']:.2f} KiB/conn at {small:,}, {run['kib_big']:.2f} at "
                    f"{stack.connected:,} ({stack.failed} failed, {stack.connect_secs:.0f} s to connect); "
                    f"p99 ratio {run['p99_ratio'] or 0:.2f}"
                )
            finally:
                pub.close()
                stack.close()
    keys = [
        "kib_small",
        "kib_big",
        "rss_small_mib",
        "rss_big_mib",
        "baseline_mib",
        "connect_s",
        "p50_ms_small",
        "p99_ms_small",
        "max_ms_small",
        "p50_ms_big",
        "p99_ms_big",
        "max_ms_big",
        "p99_ratio",
        "p50_ratio",
        "loss_small",
        "loss_big",
        "server_cpu_small",
        "server_cpu_big",
    ]
    return {
        "sizes": [small, big],
        "user": IDLE_USER,
        "interval_s": interval,
        "duration_s": duration,
        "results": {label: _summarise(r, keys) for label, r in runs.items()},
    }


# The soak (``make soak``): token-mode connections churning and resuming, tokens
# expiring, tasks emitting, and a few clients that stop reading.
SOAK_TOKEN_TTL = 120.0  # s; a soak shorter than 3 ttl uses a third of its length (20 s at least)
SOAK_WRITE_BUFFER_LIMIT = 256 * 1024  # the server's write_buffer_limit for the soak (default 1 MiB)
SOAK_STALLED = 5  # connections at a time that never read
SOAK_STALL_EVERY = 30.0  # s between two batches of stalled connections
SOAK_STALL_EVENT_BYTES = 8192  # each stalled user is sent one event of this size ...
SOAK_STALL_INTERVAL = 0.05  # ... every this many s (160 KiB/s each)
SOAK_END_WAIT = 60.0  # s the end waits for active connections to come back to what the clients hold
# the big events' publisher trims the stalled users' histories (and, in open mode, the
# firehose) shorter than the default 1,000, which would keep up to 800 MB in Redis
SOAK_HISTORY_MAX = 100
_STATUS_COUNTS = ("slow_clients_dropped", "send_failures")


def server_status(port: int) -> dict[str, Any] | None:
    """The server's ``GET /status`` JSON, or None when it does not answer within 5 s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/status")
        reply = conn.getresponse()
        body = reply.read()
        return json.loads(body) if reply.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 60 if den else 0.0


def _drop_times(
    batches: list[tuple[float, int]], watch: list[tuple[float, int | None, int | None]], end: float
) -> list[float | None]:
    """For each batch of stalled connections (opened at t, how many), the s until the
    server's ``slow_clients_dropped`` had counted them all, before the next batch
    (the last: before ``end``); None when it had not (they were closed some other
    way, or were still open)."""
    out: list[float | None] = []
    for b, (t_b, opened) in enumerate(batches):
        t_next = batches[b + 1][0] if b + 1 < len(batches) else end
        after = [(t, slow) for t, _, slow in watch if t_b <= t < t_next and slow is not None]
        if not after or not opened:
            out.append(None)
            continue
        base = after[0][1]  # a stalled connection needs seconds of traffic before it can be dropped
        out.append(next((t - t_b for t, slow in after if slow >= base + opened), None))
    return out


def _add(total: dict[str, int], part: dict[str, int] | None) -> None:
    for key, value in (part or {}).items():
        total[key] = total.get(key, 0) + value


def run_soak(
    redis_url: str, n: int, duration: float, log: Any, every: float = 5.0, stalled: int = SOAK_STALLED
) -> dict[str, Any]:
    """Token-mode celery-ws under a day's abuse; RSS and active connections over time.

    * N connections (``u0``...), 5 % closed and reopened every ``every`` s; every
      reopen resumes from the last event id the connection saw (``last_event_id``);
    * tokens live ``SOAK_TOKEN_TTL`` s: the server closes with 4401 at expiry and
      the client reconnects with a fresh token, resuming;
    * a thread emits progress every 2 ms and a step result every 40 ms, walking
      the users (the progress writer coalesces to every ``progress_interval``);
    * ``stalled`` connections (users ``s0``...) authenticate and never read,
      a new batch every ``SOAK_STALL_EVERY`` s, each user sent an 8 KiB event
      every 50 ms, against a ``write_buffer_limit`` of 256 KiB: the server must
      drop them (or close them: keepalive, expiry);
    * RSS and ``/status`` every ``every`` s. At the end the churn and the stalled
      batches stop (the last batch stays, still sent to) and the soak waits up to
      ``SOAK_END_WAIT`` s for the server's active connections to come back to
      what the clients hold.
    """
    ttl = SOAK_TOKEN_TTL if duration >= 3 * SOAK_TOKEN_TTL else max(20.0, duration / 3)
    stack = Stack(
        "celery-ws",
        redis_url,
        n,
        token=True,
        server_env={"CELERY_WS_WRITE_BUFFER_LIMIT": str(SOAK_WRITE_BUFFER_LIMIT)},
        client_args=["--ttl", f"{ttl:g}", "--resume"],
    )
    port = stack.servers[0].port  # type: ignore[attr-defined]
    pid = stack.server_pids[0]
    pub = Pub("celery-ws", redis_url)
    stall_child = (
        Child(
            [
                PY,
                "-m",
                "benchmarks.clients",
                "celery-ws",
                f"ws://127.0.0.1:{port}",
                "0",
                "0",
                "--token",
                "--ttl",
                f"{ttl:g}",
            ],
            stack.env,
        )
        if stalled
        else None
    )
    stall_users = [f"s{j}" for j in range(stalled)]
    stop, stall_stop = threading.Event(), threading.Event()
    emitted, big_sent = [0], [0]
    errors: list[str] = []

    def tasks() -> None:  # a few "tasks" reporting progress and step results to their owners
        from celery_ws.protocol import event

        try:
            emitter = pub.worker_emitter()
            i = 0
            while not stop.is_set() and i < 10_000_000:
                task = f"soak-task-{i // 200}"
                user = f"u{(i // 200) % n}"
                emitter.reporter(task, user)(i % 200, 200, "working")
                if i % 20 == 0:
                    emitter.emit(
                        event(
                            "task_step_result",
                            task_id=task,
                            user_id=user,
                            step=str(i),
                            message="ok",
                            status="completed",
                            bm=0,
                        )
                    )
                    emitted[0] += 1
                i += 1
                time.sleep(0.002)
        except Exception as exc:  # reported in the result, not lost with the thread
            errors.append(f"tasks: {exc!r}")

    def stall_traffic() -> None:  # big events to the stalled users, connected or not
        from celery_ws import Publisher
        from celery_ws.protocol import message_event
        from celery_ws.settings import Settings

        big = Publisher(settings=Settings.load(redis_url=redis_url, history_max_events=SOAK_HISTORY_MAX))
        pads = [base64.b64encode(os.urandom(SOAK_STALL_EVENT_BYTES * 3 // 4)).decode() for _ in range(8)]
        try:
            t0, k = time.monotonic(), 0
            while not stall_stop.is_set() and k < 10_000_000:
                big.emit_many(
                    [
                        message_event({"type": "bench_big", "pad": pads[(k + j) % len(pads)]}, user_id=u)
                        for j, u in enumerate(stall_users)
                    ]
                )
                big_sent[0] += len(stall_users)
                k += 1
                stall_stop.wait(max(0.0, t0 + k * SOAK_STALL_INTERVAL - time.monotonic()))
        except Exception as exc:
            errors.append(f"stall traffic: {exc!r}")
        finally:
            big.close()

    watch: list[tuple[float, int | None, int | None]] = []  # (t, active, slow_clients_dropped), every 0.5 s

    def watcher() -> None:
        for _ in range(int((duration + SOAK_END_WAIT + 300) / 0.5)):
            status = server_status(port)
            watch.append(
                (
                    time.monotonic(),
                    status.get("active_connections") if status else None,
                    status.get("slow_clients_dropped") if status else None,
                )
            )
            if stop.wait(0.5):
                return

    threads = [threading.Thread(target=tasks, daemon=True), threading.Thread(target=watcher, daemon=True)]
    if stalled:
        threads.append(threading.Thread(target=stall_traffic, daemon=True))
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float]] = []
    active: list[tuple[float, int | None]] = []
    end_trace: list[tuple[float, int | None, int]] = []
    batches: list[dict[str, Any]] = []
    opened_at: list[tuple[float, int]] = []
    final_batch: dict[str, Any] = {}
    churned, held, active_final, settle = 0, 0, None, None
    status0 = server_status(port) or {}
    status1: dict[str, Any] = {}
    reports: list[dict[str, Any]] = []
    churn_k = max(1, n // 20 // len(stack.clients))
    t0 = time.monotonic()
    try:
        next_stall = 0.0
        for tick in range(int(duration / every) + 2):
            t = time.monotonic() - t0
            if t >= duration:
                break
            samples.append((t, rss(pid) / 2**20))
            status = server_status(port)
            active.append((t, status.get("active_connections") if status else None))
            if stall_child is not None and t >= next_stall:
                batches.append(stall_child.ask("stall " + " ".join(stall_users), timeout=60))
                opened_at.append((time.monotonic(), batches[-1]["opened"]))
                next_stall += SOAK_STALL_EVERY
            for c in stack.clients:
                churned += c.ask(f"churn {churn_k}", timeout=120)["churned"]
            time.sleep(max(0.0, min(t0 + (tick + 1) * every, t0 + duration) - time.monotonic()))
        samples.append((time.monotonic() - t0, rss(pid) / 2**20))
        # the end: no more churn, no new stalled batch; the last one is still sent to
        t_end = time.monotonic()
        for _ in range(int(SOAK_END_WAIT / 0.5) + 1):
            if time.monotonic() - t_end >= SOAK_END_WAIT:
                break
            status = server_status(port)
            held = sum(c.ask("report")["open"] for c in stack.clients)
            active_final = status.get("active_connections") if status else None
            end_trace.append((time.monotonic() - t0, active_final, held))
            if active_final is not None and active_final <= held:
                settle = time.monotonic() - t_end
                break
            time.sleep(0.5)
        if stall_child is not None:
            final_batch = stall_child.ask("stall", timeout=60)
        stall_stop.set()
        status1 = server_status(port) or {}
        reports = [c.ask("report") for c in stack.clients]
    finally:
        stop.set()
        stall_stop.set()
        for thread in threads:
            thread.join(5)
        if stall_child is not None:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                stall_child.ask("close", timeout=30)
            stall_child.stop()
        try:
            rss_final: float | None = rss(pid) / 2**20
        except psutil.Error:  # the server is gone: the figures say so below
            rss_final = None
        pub.close()
        stack.close()
    drops = _drop_times(opened_at, watch, math.inf) if opened_at else []
    known = sorted(d for d in drops if d is not None)
    half = [s for s in samples if s[0] >= duration / 2] or samples
    slope = _slope_per_min(half)
    from celery_ws.settings import Settings

    defaults = Settings.load(redis_url=redis_url)  # the soak's server changes none of these
    # the limits that end a connection that never reads: the write buffer (at the rate it is
    # sent to), keepalive, and token expiry, the hard bound: the close starts at expiry and
    # is over (the transport aborted) close_timeout later
    limits = {
        "ping_interval_s": defaults.ping_interval,
        "ping_timeout_s": defaults.ping_timeout,
        "close_timeout_s": defaults.close_timeout,
        "token_ttl_s": ttl,
        "bound_s": ttl + defaults.close_timeout,
    }
    counts: dict[str, int] = {}
    closes: dict[str, int] = {}
    for r in reports:
        _add(counts, r.get("soak"))
        _add(closes, r.get("server_closes"))
    stall_totals = final_batch.get("totals") or (batches[-1]["totals"] if batches else {})
    actives = [a for _, a, _ in watch if a is not None] + [a for _, a in active if a is not None]
    result = {
        "connections": n,
        "duration_s": duration,
        "every_s": every,
        "samples": samples,
        "step_results": emitted[0],
        "rss_start_mib": samples[0][1],
        "rss_end_mib": samples[-1][1],
        "rss_max_mib": max(s[1] for s in samples),
        "slope_second_half_mib_per_min": slope,
        "rss_final_mib": rss_final,
        "token_ttl_s": ttl,
        "write_buffer_limit": SOAK_WRITE_BUFFER_LIMIT,
        "churned": churned,
        "resumes": counts.get("resumes", 0),
        "resumes_recovered": counts.get("recovered", 0),
        "resumes_not_recovered": counts.get("not_recovered", 0),
        "reconnects": counts.get("reconnects", 0),
        "reconnects_failed": counts.get("reconnects_failed", 0),
        "server_closes": closes,  # close code -> connections the server closed, as the clients saw it
        "stalled_at_once": stalled,
        "stall_every_s": SOAK_STALL_EVERY,
        "stall_event_bytes": SOAK_STALL_EVENT_BYTES,
        "stall_interval_s": SOAK_STALL_INTERVAL,
        "stall_events": big_sent[0],
        "stall_mib_sent": big_sent[0] * SOAK_STALL_EVENT_BYTES / 2**20,
        "stalled_opened": stall_totals.get("opened", 0),
        "stalled_open_failed": stall_totals.get("open_failed", 0),
        "stalled_ended_by_server": stall_totals.get("ended_by_server", 0),
        "stalled_closed_by_client": stall_totals.get("closed_by_client", 0),
        "stalled_last_batch": {k: v for k, v in final_batch.items() if k != "totals"},
        "stalled_open_errors": [e for b in batches for e in b.get("errors", [])][:10],
        # stalled connections sent an event before their "authenticated" frame
        "stalled_event_before_authenticated": stall_totals.get("before_authenticated", 0),
        "slow_clients_dropped": (
            status1.get("slow_clients_dropped", 0) - status0.get("slow_clients_dropped", 0)
            if status1
            else None
        ),
        "server_counts": {
            k: v for k, v in status1.items() if k.startswith("connections_") or k in _STATUS_COUNTS
        },
        "active_samples": active,
        "active_max": max(actives) if actives else None,
        "active_final": active_final,
        "clients_held_final": held,
        "settle_s": settle,
        "returned_to_held": settle is not None,
        "end_trace": end_trace,
        "limits_s": limits,
        # per batch, s from opening until the server had dropped all of it as slow (None: not all)
        "stalled_drop_after_s": drops,
        "stalled_drop_after_s_min": known[0] if known else None,
        "stalled_drop_after_s_median": known[len(known) // 2] if known else None,
        "stalled_drop_after_s_max": known[-1] if known else None,
        "stalled_batches_not_all_dropped": sum(d is None for d in drops),
        "errors": errors,
    }
    log(
        f"soak {duration:.0f} s: RSS {result['rss_start_mib']:.1f} -> {result['rss_end_mib']:.1f} MiB, "
        f"second-half slope {slope:+.2f} MiB/min"
    )
    log(
        f"  {churned} churned, {result['resumes']} resumes ({result['resumes_not_recovered']} not recovered), "
        f"{result['reconnects']} reconnects after server closes {closes} (token ttl {ttl:g} s)"
    )
    log(
        f"  stalled: {result['stalled_opened']} opened, {result['stalled_ended_by_server']} ended by the server "
        f"({result['slow_clients_dropped']} dropped as slow), {result['stalled_closed_by_client']} still open when "
        f"replaced; {result['stall_mib_sent']:.0f} MiB sent to them"
    )
    log(
        f"  active connections: max {result['active_max']}, at the end {active_final} for {held} held by the clients"
        + (
            f" {settle:.1f} s after the churn stopped"
            if settle is not None
            else f": not back within {SOAK_END_WAIT:g} s"
        )
    )
    log(
        "  stalled batches dropped whole as slow after "
        + (f"{known[0]:.1f}-{known[-1]:.1f} s (median {known[len(known) // 2]:.1f})" if known else "-")
        + f", {result['stalled_batches_not_all_dropped']} of {len(drops)} batches not (token expiry bounds a "
        f"connection at {limits['bound_s']:g} s)" + (f"; errors {errors}" if errors else "")
    )
    return result
