"""What a client received of a task, against what Redis stored: the checks the
failover tests share (Sentinel, Redis Cluster)."""

from __future__ import annotations

from typing import Any

import redis

from celery_ws.client import Client
from celery_ws.keys import Home
from celery_ws.protocol import event_order


def received(client: Client, task_id: str) -> list[str]:
    """Ids of the task's events the client got, heartbeats left out (never stored)."""
    return [
        f["id"]
        for f in client.frames
        if f.get("task_id") == task_id and "id" in f and f.get("type") != "heartbeat"
    ]


def stored(client: redis.Redis, home: Home, task_id: str) -> list[str]:
    """Ids of the task's history as the (new) master has it."""
    return [entry_id.decode() for entry_id, _ in client.xrange(home.task_events(task_id))]


def steps(frames: list[dict[str, Any]], task_id: str) -> list[int]:
    """The ``i`` of each step result of ``tests.tasks.step_by_step``, as received."""
    return [
        f["result"]["i"]
        for f in frames
        if f.get("type") == "task_step_result" and f.get("task_id") == task_id
    ]


def assert_whole(client: Client, history: list[str], task_id: str) -> None:
    """Each event once, in order, and everything the history holds."""
    got = received(client, task_id)
    assert len(got) == len(set(got)), "duplicates"
    assert got == sorted(got, key=event_order), "out of order"
    assert set(history) <= set(got), f"stored, never received: {sorted(set(history) - set(got))}"


def assert_lost_in_one_window(got_steps: list[int], total: int, bound: int) -> None:
    """Steps neither received nor stored went to a master in the failover's
    window: few, and one after the other."""
    lost = sorted(set(range(total)) - set(got_steps))
    assert len(lost) <= bound, f"lost {lost}"
    assert lost == list(range(lost[0], lost[0] + len(lost))) if lost else True, f"lost {lost}"
    assert got_steps[-1] == total - 1
