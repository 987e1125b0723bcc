"""Delivery by interest: what Redis and the server replicas spend per delivered
event as replicas are added, when every event goes to users connected to one
replica. Measured for this tree and, in the same run, for a baseline commit
checked out into a temporary git worktree (the design where every replica read
every event from one shared stream), so the two are compared on the same
machine and Redis."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from .bench_ws import Stack, _drain, next_gen
from .common import PY, ROOT, SECRET, Child, CpuMeter, summary

#: main just before delivery by interest: every replica XREADs the stream cws:events
BASELINE = "68bf5ad"
USERS = 100
REPLICAS = (1, 2, 4)

# the publisher runs from the tree under test, as that tree's workers would, in token mode
_PUBLISHER = """
import json, sys, time
from celery_ws import Publisher
from celery_ws.protocol import message_event
url, users, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
publisher = Publisher(url)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    gen = int(line)
    for start in range(0, events, 500):
        publisher.emit_many([
            message_event(
                {"type": "bench", "bm": gen, "seq": i, "ts": time.time(), "to": f"u{i % users}", "pad": "x" * 200},
                user_id=f"u{i % users}",
            )
            for i in range(start, min(events, start + 500))
        ])
    print(json.dumps({"sent": events}), flush=True)
"""


def _redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextlib.contextmanager
def baseline_tree(commit: str) -> Any:
    """``commit`` checked out into a temporary worktree (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="celery-ws-baseline-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )


def _one(root: Path, redis_url: str, replicas: int, events: int, repeats: int) -> dict[str, Any]:
    """``replicas`` servers of ``root``; USERS token-mode connections, all on the
    first; ``events`` events addressed to them, ``repeats`` times."""
    stack = Stack("celery-ws", redis_url, USERS, token=True, replicas=replicas, procs=1, server_root=root)
    publisher = Child(
        [PY, "-c", _PUBLISHER, redis_url, str(USERS), str(events)], {"CELERY_WS_SECRET": SECRET}, root=root
    )
    r = redis.Redis.from_url(redis_url)
    redis_us, servers_us, delivered = [], [], []
    try:
        publisher.read(60)
        for _ in range(repeats):
            gen = next_gen()
            stack.reset(gen)
            servers = CpuMeter(stack.server_pids)
            redis_before = _redis_cpu(r)
            publisher.ask(str(gen), timeout=300)
            reports = _drain(stack, events, timeout=60)
            count = sum(rep["count"] for rep in reports)
            time.sleep(0.3)  # what the other replicas still had on their way in
            redis_us.append((_redis_cpu(r) - redis_before) * 1e6 / max(count, 1))
            servers_us.append(servers.seconds() * 1e6 / max(count, 1))
            delivered.append(count / events)
    finally:
        publisher.stop()
        stack.close()
        r.close()
    return {
        "redis_cpu_us_per_event": summary(redis_us),
        "servers_cpu_us_per_event": summary(servers_us),
        "delivered": summary(delivered),
    }


def run_interest(redis_url: str, repeats: int, events: int, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events, "users": USERS, "baseline_commit": BASELINE}
    with baseline_tree(BASELINE) as baseline:
        for label, root in (("celery-ws", ROOT), ("baseline", baseline)):
            rows = out.setdefault(label, {})
            for replicas in REPLICAS:
                rows[str(replicas)] = row = _one(root, redis_url, replicas, events, repeats)
                log(
                    f"interest {label} replicas={replicas}: Redis "
                    f"{row['redis_cpu_us_per_event']['median']:.1f} us/event, replicas "
                    f"{row['servers_cpu_us_per_event']['median']:.1f} us/event, delivered "
                    f"{row['delivered']['median']:.3f}"
                )
    return out
