"""Faults on real processes: servers, workers and Redis are killed and
restarted under running tasks, and clients are checked event id by event id
against what the workers stored."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from celery_ws import Publisher, Settings
from celery_ws.client import Client
from celery_ws.protocol import event_order
from celery_ws.testing import ServerThread
from celery_ws.testing.redis_server import RedisServer
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess, WorkerProcess

HEARTBEAT = 0.5
#: a dead worker is reported after three missed heartbeats, plus one
#: housekeeping pass of the server, plus slack for a loaded machine
LOST_BOUND = 3 * HEARTBEAT + 1.0 + 3.0


def stored_ids(publisher: Publisher, task_id: str) -> list[str]:
    """The ids of everything the workers stored for a task (its history)."""
    home = publisher.settings.keys.home(publisher.owner_of(task_id))
    entries = publisher.redis.xrange(home.task_events(task_id))
    return [entry_id.decode() for entry_id, _ in entries]


def received_ids(client: Client, task_id: str) -> list[str]:
    return [
        f["id"]
        for f in client.frames
        if f.get("task_id") == task_id and "id" in f and f.get("type") != "heartbeat"
    ]


def assert_complete(client: Client, publisher: Publisher, task_id: str) -> None:
    got, stored = received_ids(client, task_id), stored_ids(publisher, task_id)
    assert len(got) == len(set(got)), "duplicates"
    assert got == sorted(got, key=event_order), "out of order"
    assert set(got) == set(stored), f"missing {sorted(set(stored) - set(got))}"


@pytest.fixture
def serve(celery_ws_redis_url, tmp_path):
    server = ServeProcess(celery_ws_redis_url, tmp_path).start()
    yield server
    server.stop()


# -- (1) and (2): disconnects and server crashes -------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_server_killed_mid_task_then_restarted_loses_nothing(serve, publisher, user):
    async with Client(
        serve.url, reconnect=True, backoff_initial=0.1, backoff_max=0.5, timeout=seconds(10)
    ) as client:
        await client.subscribe(user_id=user)
        result = tasks.progress_then_ask.delay_for(user, steps=10, delay=0.1)
        await client.wait_for_event("task_progress", task_id=result.id)
        serve.kill()  # SIGKILL: no close frame, no goodbye
        # the question is asked while no server runs
        await asyncio.sleep(2.0)
        assert publisher.redis.zcard(publisher.settings.keys.home(user).user_pending(user)) == 1
        serve.start()
        request = await client.wait_for(
            lambda f: f.get("task_id") == result.id and f.get("callback_id"), timeout=seconds(20)
        )
        await client.confirm(request["callback_id"], True, "after the restart")
        done = await client.wait_for_event("task_succeeded", task_id=result.id, timeout=seconds(20))
    assert done["result"]["feedback"] == "after the restart"
    assert client.reconnects >= 1
    assert_complete(client, publisher, result.id)


# -- (3): Redis goes away -------------------------------------------------------------------


async def test_redis_outage_mid_task_loses_no_step_result(app, celery_ws_redis_url, tmp_path, user):
    """celery-ws' Redis stops for 5 s and comes back on its port with its data;
    the broker stays up. The task finishes, the client has every step result
    and the final status."""
    with RedisServer(persistent=True) as events_redis:
        publisher = Publisher(events_redis.url)
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(
            app,
            events_redis.url,
            tmp_path,
            queue,
            broker_url=celery_ws_redis_url,
            env={"CELERY_RESULT_BACKEND": celery_ws_redis_url},
        )
        server = ServeProcess(events_redis.url, tmp_path)
        worker.start()
        server.start()
        try:
            async with Client(
                server.url, reconnect=True, backoff_initial=0.1, backoff_max=1.0, timeout=seconds(10)
            ) as client:
                await client.subscribe(user_id=user)
                result = tasks.step_by_step.apply_async_for(user, (16, 0.5), queue=queue)
                waiting = tasks.ask.apply_async_for(user, (), {"timeout": seconds(60)}, queue=queue)
                request = await client.wait_for(
                    lambda f: f.get("task_id") == waiting.id and f.get("callback_id"), timeout=seconds(20)
                )
                await client.wait_for_event(
                    "task_step_result", task_id=result.id, step="step-1", timeout=seconds(20)
                )
                events_redis.stop()
                await asyncio.sleep(5)
                events_redis.start()
                done = await client.wait_for_event("task_succeeded", task_id=result.id, timeout=seconds(40))
                # confirm_step kept waiting through the outage
                await client.confirm(request["callback_id"], True, "after the outage")
                answered = await client.wait_for_event(
                    "task_succeeded", task_id=waiting.id, timeout=seconds(20)
                )
            steps = [
                f["step"]
                for f in client.frames
                if f.get("type") == "task_step_result" and f.get("task_id") == result.id
            ]
            assert steps == [f"step-{i}" for i in range(16)]
            assert done["result"] == 16
            assert answered["result"]["feedback"] == "after the outage"
            assert_complete(client, publisher, result.id)
        finally:
            publisher.close()
            server.stop()
            worker.stop()


# -- (4): workers die -----------------------------------------------------------------------


@pytest.fixture
def fragile_worker(app, celery_ws_redis_url, tmp_path):
    worker = WorkerProcess(
        app,
        celery_ws_redis_url,
        tmp_path,
        f"fragile-{uuid.uuid4().hex[:8]}",
        env={"CELERY_WS_HEARTBEAT_INTERVAL": str(HEARTBEAT)},
    )
    worker.start()
    yield worker
    worker.stop()


@pytest.mark.parametrize("where", ["confirm_step", "progress loop"])
async def test_whole_worker_killed_is_reported_lost_within_the_bound(
    celery_ws_client, fragile_worker, user, where
):
    async with celery_ws_client(user_id=user) as client:
        if where == "confirm_step":
            result = tasks.ask.apply_async_for(user, queue=fragile_worker.queue)
            request = await client.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))
        else:
            result = tasks.spin.apply_async_for(user, queue=fragile_worker.queue)
            await client.wait_for_event("task_progress", task_id=result.id)
        killed_at = time.monotonic()
        fragile_worker.kill()
        lost = await client.wait_for_event("task_failed", task_id=result.id, timeout=seconds(LOST_BOUND + 5))
        reported_after = time.monotonic() - killed_at
        if where == "confirm_step":
            late = await client.confirm(request["callback_id"], True)
            assert late["type"] == "error"  # nobody waits for it any more
    assert lost["error_code"] == "WorkerLost"
    assert reported_after < LOST_BOUND


async def test_pool_child_killed_is_reported_by_celery(celery_ws_client, fragile_worker, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.spin.apply_async_for(user, queue=fragile_worker.queue)
        await client.wait_for_event("task_progress", task_id=result.id)
        for pid in fragile_worker.children():
            os.kill(pid, signal.SIGKILL)
        failed = await client.wait_for_event(
            "task_failed", task_id=result.id, timeout=seconds(LOST_BOUND + 5)
        )
    assert failed["error_code"] in ("WorkerLostError", "WorkerLost")


# -- (6): two replicas, one answer ------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_two_answers_through_two_replicas_exactly_one_wins(celery_ws_settings, user):
    replica_a = ServerThread(celery_ws_settings).start()
    replica_b = ServerThread(celery_ws_settings).start()
    try:
        async with (
            Client(replica_a.url, timeout=seconds(10)) as a,
            Client(replica_b.url, timeout=seconds(10)) as b,
        ):
            await a.subscribe(user_id=user)
            await b.subscribe(user_id=user)
            for _ in range(5):
                task_id = tasks.ask.delay_for(user).id
                request = await a.wait_for(
                    lambda f, t=task_id: f.get("task_id") == t and f.get("callback_id")
                )
                replies = await asyncio.gather(
                    a.confirm(request["callback_id"], True, "from A"),
                    b.confirm(request["callback_id"], False, "from B"),
                )
                winners = [r for r in replies if r["type"] == "confirmation_received"]
                assert len(winners) == 1, replies
                done = await a.wait_for_event("task_succeeded", task_id=task_id)
                assert done["result"]["feedback"] == ("from A" if winners[0]["proceed"] else "from B")
    finally:
        replica_a.stop()
        replica_b.stop()


# -- soak: many tasks through restarts --------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_soak_many_tasks_through_server_restarts(serve, publisher, user):
    async with Client(
        serve.url, reconnect=True, backoff_initial=0.1, backoff_max=0.5, timeout=seconds(10)
    ) as client:
        await client.subscribe(user_id=user)
        results = [tasks.slow_progress.delay_for(user, steps=30, delay=0.05) for _ in range(8)]
        results += [tasks.step_by_step.delay_for(user, 6, 0.2) for _ in range(4)]
        for restart in range(3):
            await asyncio.sleep(0.6)
            (serve.kill if restart % 2 else serve.stop)()
            await asyncio.sleep(0.3)
            serve.start()
        for result in results:
            await client.wait_for_event("task_succeeded", task_id=result.id, timeout=seconds(60))
    for result in results:
        assert_complete(client, publisher, result.id)


async def test_worker_sigterm_lets_the_running_task_finish_and_report(celery_ws_client, fragile_worker, user):
    """Celery's warm shutdown finishes the running task; its last events still
    reach Redis before the process exits."""
    async with celery_ws_client(user_id=user) as client:
        result = tasks.slow_progress.apply_async_for(user, (20, 0.1), queue=fragile_worker.queue)
        await client.wait_for_event("task_progress", task_id=result.id)
        assert fragile_worker.process is not None
        fragile_worker.process.send_signal(signal.SIGTERM)  # the main process only, as a supervisor would
        done = await client.wait_for_event("task_succeeded", task_id=result.id, timeout=seconds(20))
    progress = [f for f in client.frames if f.get("task_id") == result.id and f["type"] == "task_progress"]
    assert done["result"] == "finished"
    assert progress[-1]["current"] == 20


async def test_async_notify_user_waits_through_a_redis_restart(user):
    """The asyncio publisher keeps its question and its deadline across a Redis
    restart, and takes the answer given after it."""
    import redis as redis_py

    from celery_ws import AsyncPublisher, TaskStepResult
    from celery_ws.storage import ANSWER, answer_call, answer_payload

    with RedisServer(persistent=True) as events_redis:
        settings = Settings.load(redis_url=events_redis.url)
        publisher = AsyncPublisher(settings=settings)
        asking = asyncio.create_task(
            publisher.notify_user(
                TaskStepResult(step="s", message="ok?", status="waiting"), user, None, timeout=seconds(30)
            )
        )
        sync = redis_py.Redis.from_url(events_redis.url)
        async with asyncio.timeout(seconds(10)):
            while not sync.zcard(settings.keys.home(user).user_pending(user)):
                await asyncio.sleep(0.05)
        callback_id = sync.zrange(settings.keys.home(user).user_pending(user), 0, 0)[0].decode()
        sync.close()
        await asyncio.to_thread(events_redis.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(events_redis.start)
        sync = redis_py.Redis.from_url(events_redis.url)
        keys, args = answer_call(settings, callback_id, user, answer_payload(True, "after the restart", user))
        assert sync.register_script(ANSWER)(keys, args)[0] == b"ok"
        sync.close()
        answer = await asyncio.wait_for(asking, seconds(20))
        await publisher.aclose()
    assert answer.proceed is True
    assert answer.feedback == "after the restart"
