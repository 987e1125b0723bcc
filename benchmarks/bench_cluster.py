"""Redis topologies: how many events per second celery-ws stores, and what each
costs Redis, on one standalone Redis, a one-master Redis Cluster and a
three-master Redis Cluster, side by side in one run.

Publishers store task events (``task_progress`` for a task and its owner:
the owner's and the task's histories, the task's state, both pub/sub
channels) for many owners, as workers of many users would. What is reported:
events/s stored (all publishers together), Redis CPU per event summed over
the masters, and the busiest master's share of that CPU (1.0 with one
master; 1/3 when three share the work evenly). On a machine with fewer cores
than masters plus publishers, the three masters share cores, so events/s
shows the spread's cost, not its gain; the share shows the spread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from celery_ws.testing.redis_topologies import RedisClusterNodes

from .common import PY, SECRET, Child, summary

PUBLISHERS = 2
OWNERS = 1_000
BATCH = 200

_PUBLISHER = """
import json, sys, time
from celery_ws import Publisher
from celery_ws.protocol import event
url, owners, events, me, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
publisher = Publisher(url)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    gen = int(line)
    for start in range(0, events, batch):
        publisher.emit_many([
            event("task_progress", task_id=f"t-{me}-{gen}-{i % owners}", user_id=f"owner-{i % owners}",
                  current=i, total=events)
            for i in range(start, min(events, start + batch))
        ])
    print(json.dumps({"sent": events}), flush=True)
"""


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextmanager
def _cluster(masters: int) -> Iterator[tuple[str, list[redis.Redis]]]:
    with RedisClusterNodes(masters=masters, replicas=0) as cluster:
        clients = [node.client() for node in cluster.masters()]
        try:
            yield cluster.url, clients
        finally:
            for client in clients:
                client.close()


@contextmanager
def _standalone(redis_url: str) -> Iterator[tuple[str, list[redis.Redis]]]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield redis_url, [client]
    finally:
        client.close()


def _one(url: str, masters: list[redis.Redis], events: int, repeats: int) -> dict[str, Any]:
    publishers = [
        Child(
            [PY, "-c", _PUBLISHER, url, str(OWNERS), str(events), str(n), str(BATCH)],
            {"CELERY_WS_SECRET": SECRET},
        )
        for n in range(PUBLISHERS)
    ]
    rates, cpu_us, busiest = [], [], []
    try:
        for publisher in publishers:
            publisher.read(60)
        for gen in range(repeats):
            before = [_cpu(m) for m in masters]
            started = time.perf_counter()
            for publisher in publishers:
                assert publisher.proc.stdin is not None
                publisher.proc.stdin.write(f"{gen}\n")
                publisher.proc.stdin.flush()
            for publisher in publishers:
                publisher.read(600)
            elapsed = time.perf_counter() - started
            spent = [_cpu(m) - b for m, b in zip(masters, before, strict=True)]
            stored = events * PUBLISHERS
            rates.append(stored / elapsed)
            cpu_us.append(sum(spent) * 1e6 / stored)
            busiest.append(max(spent) / max(sum(spent), 1e-9))
    finally:
        for publisher in publishers:
            publisher.stop()
    return {
        "events_per_s": summary(rates),
        "redis_cpu_us_per_event": summary(cpu_us),
        "busiest_master_share": summary(busiest),
    }


def run_cluster(redis_url: str, repeats: int, events: int, log: Any) -> dict[str, Any]:
    """``events`` per publisher, ``repeats`` times, on each topology."""
    out: dict[str, Any] = {"events_per_publisher": events, "publishers": PUBLISHERS, "owners": OWNERS}
    topologies = (
        ("standalone", lambda: _standalone(redis_url)),
        ("cluster-1", lambda: _cluster(1)),
        ("cluster-3", lambda: _cluster(3)),
    )
    for label, topology in topologies:
        with topology() as (url, masters):
            out[label] = row = _one(url, masters, events, repeats)
        log(
            f"cluster {label}: {row['events_per_s']['median']:.0f} events/s, Redis "
            f"{row['redis_cpu_us_per_event']['median']:.1f} us/event, busiest master "
            f"{row['busiest_master_share']['median']:.2f} of it"
        )
    return out
