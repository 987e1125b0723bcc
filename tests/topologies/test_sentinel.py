"""celery-ws on Redis Sentinel (``redis+sentinel://``): a real ``celery worker``,
a ``celery-ws serve`` and a client carry on through a ``SENTINEL FAILOVER``
forced mid-task, none of them restarted.

The Celery broker and result backend stay on the suite's standalone Redis:
only celery-ws' own Redis goes through Sentinel.

What a forced failover may lose is Redis' own window (README, "Sentinel"):
the old master accepts writes until each process notices the new one (at
most about a second after the sentinels name it); those are gone from the
new master's history. Everything the new master has must reach the client,
once and in order, and the steps lost must all fall in that window.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_ws import Publisher, connections
from celery_ws.client import Client
from celery_ws.connections import MASTER_CHECK_INTERVAL, async_client, sync_client
from celery_ws.testing.redis_topologies import SentinelGroup
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess, WorkerProcess
from tests.topologies.delivery import assert_lost_in_one_window, assert_whole, steps, stored

STEPS = 24
STEP_DELAY = 0.2
#: steps a task may write to the old master before it notices the new one:
#: the sentinels agreeing, then a check of each process, with slack
LOST_STEPS_BOUND = int((2 + 2 * MASTER_CHECK_INTERVAL) / STEP_DELAY)


@pytest.fixture
def on_sentinel(
    app: Celery, celery_ws_redis_url: str, sentinel_group: SentinelGroup, tmp_path: Path
) -> Iterator[tuple[WorkerProcess, ServeProcess, str]]:
    """A prefork worker and a server, both on ``sentinel_group``."""
    queue = f"sentinel-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        app,
        sentinel_group.url,
        tmp_path,
        queue,
        broker_url=celery_ws_redis_url,
        env={"CELERY_RESULT_BACKEND": celery_ws_redis_url},
    )
    server = ServeProcess(sentinel_group.url, tmp_path)
    worker.start()
    try:
        server.start()
        yield worker, server, queue
    finally:
        server.stop()
        worker.stop()
        print(f"server log:\n{server.logs()}\nworker log:\n{worker.logs()}")  # shown when a test fails


async def test_a_failover_mid_task_loses_nothing_the_new_master_has(
    on_sentinel: tuple[WorkerProcess, ServeProcess, str], sentinel_group: SentinelGroup, user: str
) -> None:
    worker, server, queue = on_sentinel
    publisher = Publisher(sentinel_group.url)
    try:
        async with Client(
            server.url, reconnect=True, backoff_initial=0.1, backoff_max=0.5, timeout=seconds(10)
        ) as client:
            await client.subscribe(user_id=user)
            waiting = tasks.ask.apply_async_for(user, (), {"timeout": seconds(60)}, queue=queue)
            request = await client.wait_for(
                lambda f: f.get("task_id") == waiting.id and f.get("callback_id"), timeout=seconds(20)
            )
            running = tasks.step_by_step.apply_async_for(user, (STEPS, STEP_DELAY), queue=queue)
            await client.wait_for_event(
                "task_step_result", task_id=running.id, step="step-2", timeout=seconds(20)
            )
            old = sentinel_group.master
            new = await asyncio.to_thread(sentinel_group.failover)
            done = await client.wait_for_event("task_succeeded", task_id=running.id, timeout=seconds(30))
            # the question asked before the failover, answered after it
            await client.confirm(request["callback_id"], True, "after the failover")
            answered = await client.wait_for_event("task_succeeded", task_id=waiting.id, timeout=seconds(30))
            # cancel reaches a task that runs on the new master
            spinning = tasks.spin.apply_async_for(user, (0.05,), queue=queue)
            await client.wait_for_event("task_progress", task_id=spinning.id, timeout=seconds(20))
            await client.cancel(spinning.id)
            await client.wait_for_event("task_cancelled", task_id=spinning.id, timeout=seconds(20))
        assert (old.port, new.port) == (sentinel_group.replica.port, sentinel_group.master.port)
        assert done["result"] == STEPS
        assert answered["result"]["feedback"] == "after the failover"
        assert (server.starts, worker.starts) == (1, 1), "nothing was restarted"
        home = publisher.settings.keys.home(user)
        for task_id in (running.id, waiting.id, spinning.id):
            assert_whole(client, stored(publisher.redis, home, task_id), task_id)
        assert_lost_in_one_window(steps(list(client.frames), running.id), STEPS, LOST_STEPS_BOUND)
    finally:
        publisher.close()


async def test_clients_write_through_a_killed_master(sentinel_group: SentinelGroup) -> None:
    """The master dies (SIGKILL); until the sentinels promote the replica (about
    2 s here, more on a loaded host) every command keeps trying instead of
    failing, whether it was mid-flight or started later on an idle pooled
    connection: none raises, and the last value each client wrote is on the
    new master."""
    sync, asynchronous = sync_client(sentinel_group.url), async_client(sentinel_group.url)
    stop, written = threading.Event(), {"sync": -1, "async": -1}
    #: (client, seconds after the writers started, error)
    failures: list[tuple[str, float, str]] = []
    started = time.monotonic()

    def write_sync() -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                sync.set("sentinel-test:sync", i)
                written["sync"] = i
            except redis.RedisError as exc:
                failures.append(("sync", round(time.monotonic() - started, 2), repr(exc)))
            time.sleep(0.02)

    async def write_async() -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                await asynchronous.set("sentinel-test:async", i)
                written["async"] = i
            except redis.RedisError as exc:
                failures.append(("async", round(time.monotonic() - started, 2), repr(exc)))
            await asyncio.sleep(0.02)

    thread = threading.Thread(target=write_sync)
    thread.start()
    writer = asyncio.create_task(write_async())
    try:
        await asyncio.sleep(0.3)
        old = sentinel_group.master
        killed = time.monotonic() - started
        new = await asyncio.to_thread(sentinel_group.kill_master)
        promoted = time.monotonic() - started
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.wait_for(writer, seconds(20))
        await asyncio.to_thread(thread.join, seconds(20))
        sync.close()
        await asynchronous.aclose()
    old.start()  # back as a replica once the sentinels reconfigure it
    assert failures == [], f"killed at {killed:.2f} s, promoted at {promoted:.2f} s"
    assert new.port != old.port
    assert new.command("GET", "sentinel-test:sync") == str(written["sync"])
    assert new.command("GET", "sentinel-test:async") == str(written["async"])


async def test_without_a_master_commands_wait_their_patience_then_fail_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both data nodes die, so nothing can be promoted: the first command waits
    ``FAILOVER_PATIENCE`` for a master and fails; the next ones fail at once
    instead of each waiting as long; once the master is back, commands work
    and a later outage gets the whole patience again."""
    patience = 2.0
    monkeypatch.setattr(connections, "FAILOVER_PATIENCE", patience)

    async def elapsed(call: Any) -> float:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            await call()
        return time.monotonic() - started

    with SentinelGroup() as group:
        sync, asynchronous = sync_client(group.url), async_client(group.url)
        try:
            sync.set("patience", 1)
            await asynchronous.set("patience", 1)
            for node in group.data_nodes:
                node.kill()
            first = await elapsed(lambda: asyncio.to_thread(sync.set, "patience", 2))
            first_async = await elapsed(lambda: asynchronous.set("patience", 2))
            then = await elapsed(lambda: asyncio.to_thread(sync.set, "patience", 3))
            then_async = await elapsed(lambda: asynchronous.set("patience", 3))
            # each client (each pool) waits once
            assert min(first, first_async) >= patience, f"gave up after {first:.2f}, {first_async:.2f} s"
            assert max(then, then_async) < patience, f"waited again: {then:.2f}, {then_async:.2f} s"

            group.data_nodes[0].start()  # the master, back where the sentinels expect it
            deadline = time.monotonic() + seconds(20)
            while time.monotonic() < deadline:
                try:
                    sync.set("patience", 4)
                    await asynchronous.set("patience", 4)
                    break
                except redis.ConnectionError:
                    await asyncio.sleep(0.2)
            assert group.data_nodes[0].command("GET", "patience") == "4"

            group.data_nodes[0].kill()
            again = await elapsed(lambda: asyncio.to_thread(sync.set, "patience", 5))
            assert again >= patience, f"a new outage got {again:.2f} s, not the whole patience"
        finally:
            sync.close()
            await asynchronous.aclose()
