"""Deferred questions with real processes: a ``celery worker -P prefork -c 1``
subprocess, the suite's server and a second replica (``python -m celery_ws
serve --app tests.prefork_app:app``), both sending continuations. And the
README's guidance for blocking questions, run: ``confirm_step()`` on a
threads-pool queue beside a prefork queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_ws import Publisher, final_result
from celery_ws.client import Client
from celery_ws.protocol import event_order
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess, WorkerProcess


@pytest.fixture(scope="module")
def one_slot(
    app: Celery, celery_ws_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A prefork worker with a single child: one task at a time."""
    worker = WorkerProcess(
        app,
        celery_ws_redis_url,
        tmp_path_factory.mktemp("one-slot"),
        f"one-{uuid.uuid4().hex[:8]}",
        concurrency=1,
    ).start()
    yield worker.queue
    worker.stop()


@pytest.fixture(scope="module")
def replica_b(celery_ws_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A second replica with the Celery app: it sends continuations too."""
    server = ServeProcess(
        celery_ws_redis_url, tmp_path_factory.mktemp("replica-b"), app="tests.prefork_app:app"
    )
    server.start()
    yield server
    server.stop()


def runs(publisher: Publisher, task_id: str) -> int:
    return int(publisher.redis.get(tasks.runs_key(task_id)) or 0)


async def test_ten_questions_wait_without_holding_the_only_slot(
    celery_ws_client, celery_ws_server, one_slot, replica_b, publisher, user
):
    """Ten tasks ask and return on a one-slot prefork worker; an eleventh
    ordinary task runs at once; the ten answers (half through each replica)
    run ten continuations, each once, with its answer, under the owner; a
    client following the first workflow sees it from the question to its end."""
    async with (
        celery_ws_client(user_id=user) as on_a,
        Client(replica_b.url, timeout=seconds(10)) as on_b,
    ):
        await on_b.subscribe(user_id=user)
        started = time.monotonic()
        firsts = [
            tasks.ask_later.apply_async_for(user, (f"p{i}",), {"queue": one_slot}, queue=one_slot)
            for i in range(10)
        ]
        async with Client(replica_b.url, timeout=seconds(10)) as watcher:
            # from the start of its history: the worker may be past the question already
            await watcher.subscribe(task_id=firsts[0].id, last_event_id="0-0")
            for first in firsts:
                await on_a.wait_for_event("task_waiting", task_id=first.id, timeout=seconds(20))
            all_waiting = time.monotonic() - started
            ordinary = tasks.report.apply_async_for(user, (3,), queue=one_slot)
            await on_a.wait_for_event("task_succeeded", task_id=ordinary.id, timeout=seconds(5))
            questions = [
                await on_a.wait_for(lambda f, t=first.id: f.get("task_id") == t and f.get("callback_id"))
                for first in firsts
            ]
            for i, question in enumerate(questions):
                answering = on_a if i % 2 == 0 else on_b
                reply = await answering.confirm(question["callback_id"], i % 3 != 0, f"answer {i}")
                assert reply["type"] == "confirmation_received", reply
            end = await watcher.wait_for(
                lambda f: f.get("type") == "task_succeeded" and f.get("workflow_id") == firsts[0].id,
                timeout=seconds(20),
            )
        values = [await asyncio.to_thread(final_result, first, seconds(20)) for first in firsts]
    assert all_waiting < seconds(15)
    for i, value in enumerate(values):
        assert (value["tag"], value["proceed"], value["feedback"]) == (f"p{i}", i % 3 != 0, f"answer {i}")
        assert value["owner"] == user
        assert value["runs"] == 1
    continued = [f for f in on_a.frames if f.get("type") == "task_continued"]
    assert sorted(f["task_id"] for f in continued) == sorted(first.id for first in firsts)
    for first in firsts:
        assert runs(publisher, first.get(timeout=seconds(5))["continuation_id"]) == 1
    # the workflow it follows, in the workflow's order (an open-mode connection
    # sees every event until it subscribes, so any may arrive before the replay)
    followed = firsts[0].id
    seen = [
        f["type"]
        for f in sorted(watcher.frames, key=lambda f: event_order(f.get("id", "0-0")))
        if "id" in f and f["type"] != "heartbeat" and followed in (f.get("task_id"), f.get("workflow_id"))
    ]
    assert seen[0] in ("task_sent", "task_started", "task_progress", "task_step_result")
    assert {"task_step_result", "task_waiting", "confirmation_answered", "task_continued"} <= set(seen)
    assert seen[-1] == "task_succeeded"
    assert end["result"]["tag"] == "p0"


# -- blocking questions: their own threads-pool queue (the README's commands) ---------------


@pytest.fixture(scope="module")
def pools(
    app: Celery, celery_ws_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``celery worker -P prefork -c 1 -Q <work>`` and ``celery worker -P threads
    -c 8 -Q <questions>``, as the README's guidance has them."""
    logs = tmp_path_factory.mktemp("pools")
    suffix = uuid.uuid4().hex[:8]
    work = WorkerProcess(app, celery_ws_redis_url, logs, f"work-{suffix}", concurrency=1).start()
    questions = WorkerProcess(
        app, celery_ws_redis_url, logs, f"questions-{suffix}", pool="threads", concurrency=8
    ).start()
    yield work.queue, questions.queue
    questions.stop()
    work.stop()


async def test_blocking_questions_on_a_threads_queue_leave_the_prefork_queue_free(
    celery_ws_client, pools, user
):
    work, questions = pools
    async with celery_ws_client(user_id=user) as client:
        asking = [
            tasks.ask.apply_async_for(user, (), {"timeout": seconds(30)}, queue=questions) for _ in range(5)
        ]
        requests = [
            await client.wait_for(lambda f, t=result.id: f.get("task_id") == t and f.get("callback_id"))
            for result in asking
        ]
        # five tasks block in confirm_step() on the threads pool; the one-slot
        # prefork queue still runs work at once, and so does the questions queue
        for queue in (work, questions):
            ordinary = tasks.report.apply_async_for(user, (2,), queue=queue)
            await client.wait_for_event("task_succeeded", task_id=ordinary.id, timeout=seconds(5))
        for i, request in enumerate(requests):
            await client.confirm(request["callback_id"], True, f"answer {i}")
        for i, result in enumerate(asking):
            done = await client.wait_for_event("task_succeeded", task_id=result.id)
            assert done["result"]["feedback"] == f"answer {i}"
