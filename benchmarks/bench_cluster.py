"""Redis topologies: how many events per second celery-ws stores, and what each
costs Redis, on one standalone Redis, a one-master Redis Cluster and a
three-master Redis Cluster, and (on the standalone Redis) for the code before
this work, checked out from a baseline commit into a git worktree, all in one run.

Publishers store task events for many owners, as workers of many users would:
progress and step results alternately (each goes to its owner's and its
task's histories, the task's state and both pub/sub channels). What is
reported: events/s stored (all publishers together), Redis CPU per event
summed over the masters, and the busiest master's share of that CPU (1.0 with
one master; 1/3 when three share the work evenly). Then questions: each asked
and left to expire at once (the question stored and indexed, its request
event, the expiry and its closing event), Redis CPU per question. On a
machine with fewer cores than masters plus publishers, the three masters
share cores, so events/s shows the spread's cost, not its gain; the share
shows the spread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from celery_ws.testing.redis_topologies import RedisClusterNodes

from .bench_interest import BASELINE, baseline_tree
from .common import PY, ROOT, SECRET, Child, summary

PUBLISHERS = 2
OWNERS = 1_000
BATCH = 200
QUESTIONS = 100

_PUBLISHER = """
import json, sys, time
from celery_ws import Publisher
from celery_ws.protocol import TaskStepResult, event
url, owners, events, me, batch, questions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
publisher = Publisher(url)
step = TaskStepResult(step="check", message="go on?", status="waiting")

def one(gen, i):
    owner, task = f"owner-{i % owners}", f"t-{me}-{gen}-{i % owners}"
    if i % 2:
        return event("task_step_result", task_id=task, user_id=owner, step="s", status="completed", result={"i": i})
    return event("task_progress", task_id=task, user_id=owner, current=i, total=events)

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    kind, gen = line.split()
    if kind == "events":
        for start in range(0, events, batch):
            publisher.emit_many([one(gen, i) for i in range(start, min(events, start + batch))])
        print(json.dumps({"sent": events}), flush=True)
    else:
        for i in range(questions):
            publisher.notify_user(step, f"owner-{i % owners}", f"q-{me}-{gen}-{i}", timeout=0.001, default=True)
        print(json.dumps({"asked": questions}), flush=True)
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


def _round(publishers: list[Child], masters: list[redis.Redis], command: str) -> tuple[float, list[float]]:
    """Send ``command`` to every publisher at once; the seconds until all
    answered, and each master's CPU seconds meanwhile."""
    before = [_cpu(m) for m in masters]
    started = time.perf_counter()
    for publisher in publishers:
        assert publisher.proc.stdin is not None
        publisher.proc.stdin.write(command + "\n")
        publisher.proc.stdin.flush()
    for publisher in publishers:
        publisher.read(600)
    elapsed = time.perf_counter() - started
    return elapsed, [_cpu(m) - b for m, b in zip(masters, before, strict=True)]


def _one(
    url: str, masters: list[redis.Redis], events: int, repeats: int, root: Path = ROOT
) -> dict[str, Any]:
    publishers = [
        Child(
            [PY, "-c", _PUBLISHER, url, str(OWNERS), str(events), str(n), str(BATCH), str(QUESTIONS)],
            {"CELERY_WS_SECRET": SECRET},
            root=root,
        )
        for n in range(PUBLISHERS)
    ]
    rates, cpu_us, busiest, question_us = [], [], [], []
    try:
        for publisher in publishers:
            publisher.read(60)
        for gen in range(repeats):
            elapsed, spent = _round(publishers, masters, f"events {gen}")
            stored = events * PUBLISHERS
            rates.append(stored / elapsed)
            cpu_us.append(sum(spent) * 1e6 / stored)
            busiest.append(max(spent) / max(sum(spent), 1e-9))
            _, spent = _round(publishers, masters, f"questions {gen}")
            question_us.append(sum(spent) * 1e6 / (QUESTIONS * PUBLISHERS))
    finally:
        for publisher in publishers:
            publisher.stop()
    return {
        "events_per_s": summary(rates),
        "redis_cpu_us_per_event": summary(cpu_us),
        "busiest_master_share": summary(busiest),
        "redis_cpu_us_per_question": summary(question_us),
    }


def run_cluster(redis_url: str, repeats: int, events: int, log: Any) -> dict[str, Any]:
    """``events`` per publisher, ``repeats`` times, on each topology."""
    out: dict[str, Any] = {
        "events_per_publisher": events,
        "publishers": PUBLISHERS,
        "owners": OWNERS,
        "questions_per_publisher": QUESTIONS,
        "baseline_commit": BASELINE,
    }
    with baseline_tree(BASELINE) as baseline:
        topologies = (
            ("baseline", lambda: _standalone(redis_url), baseline),
            ("standalone", lambda: _standalone(redis_url), ROOT),
            ("cluster-1", lambda: _cluster(1), ROOT),
            ("cluster-3", lambda: _cluster(3), ROOT),
        )
        for label, topology, root in topologies:
            with topology() as (url, masters):
                out[label] = row = _one(url, masters, events, repeats, root)
            log(
                f"cluster {label}: {row['events_per_s']['median']:.0f} events/s, Redis "
                f"{row['redis_cpu_us_per_event']['median']:.1f} us/event "
                f"({row['busiest_master_share']['median']:.2f} on the busiest master), "
                f"{row['redis_cpu_us_per_question']['median']:.0f} us/question"
            )
    return out
