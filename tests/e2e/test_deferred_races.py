"""Deferred questions under races and faults, with real processes: each race
ends with exactly one run of the continuation (counted in Redis by the
continuation itself), or none after a cancel, and nothing lost.

The continuation is sent at least once and runs at most once: these tests
also force the "at least" side (a replica killed between its claim and the
send; a continuation recorded as not sent and sent again) and check the
worker skips the repeat."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from celery_ws import Publisher, Settings, final_result
from celery_ws.client import Client
from celery_ws.testing import ServerThread
from celery_ws.testing.redis_server import RedisServer
from tests import tasks
from tests.helpers import eventually, seconds
from tests.processes import ServeProcess, WorkerProcess

#: a short claim, so a killed replica's claim runs out within a test
LEASE = 2.0


def runs(client: redis.Redis, task_id: str) -> int:
    return int(client.get(tasks.runs_key(task_id)) or 0)


def question_of(publisher: Publisher, callback_id: str) -> dict[str, str]:
    raw = publisher.redis.hgetall(publisher.settings.keys.callback_home(callback_id).confirm(callback_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def asked(client: Client, task_id: str) -> dict[str, Any]:
    return await client.wait_for(lambda f: f.get("task_id") == task_id and f.get("callback_id"))


@pytest.fixture
def replicas(
    celery_ws_settings: Settings, celery_ws_send_task: Any
) -> Iterator[tuple[ServerThread, ServerThread]]:
    a = ServerThread(celery_ws_settings, send_task=celery_ws_send_task).start()
    b = ServerThread(celery_ws_settings, send_task=celery_ws_send_task).start()
    yield a, b
    a.stop()
    b.stop()


@pytest.mark.usefixtures("worker", "celery_ws_server")
async def test_two_answers_at_once_through_two_replicas_continue_once(replicas, publisher, user):
    a, b = replicas
    async with Client(a.url, timeout=seconds(10)) as on_a, Client(b.url, timeout=seconds(10)) as on_b:
        await on_a.subscribe(user_id=user)
        await on_b.subscribe(user_id=user)
        for round_ in range(5):
            first = tasks.ask_later.delay_for(user, f"race{round_}")
            question = await asked(on_a, first.id)
            replies = await asyncio.gather(
                on_a.confirm(question["callback_id"], True, "from A"),
                on_b.confirm(question["callback_id"], False, "from B"),
            )
            winners = [r for r in replies if r["type"] == "confirmation_received"]
            assert len(winners) == 1, replies
            value = await asyncio.to_thread(final_result, first, seconds(20))
            assert value["feedback"] == ("from A" if winners[0]["proceed"] else "from B")
            assert value["runs"] == 1
            stored = question_of(publisher, question["callback_id"])
            assert stored["claims"] == "1" and "sent" in stored


@pytest.mark.usefixtures("worker")
async def test_replica_killed_between_claim_and_send_another_sends_it(
    celery_ws_client, celery_ws_redis_url, publisher, tmp_path, user
):
    """Replica A takes the answer, claims the continuation, and stops before
    sending it (the test hook); SIGKILL. Its claim runs out and the suite's
    server (which has the app) claims it again and sends it: one run."""
    doomed = ServeProcess(
        celery_ws_redis_url,
        tmp_path,
        app="tests.prefork_app:app",
        env={"CELERY_WS_TEST_PAUSE_AFTER_CLAIM": "60", "CELERY_WS_CONTINUATION_LEASE": str(LEASE)},
    ).start()
    try:
        async with celery_ws_client(user_id=user) as watcher, Client(doomed.url, timeout=seconds(10)) as on_a:
            await on_a.subscribe(user_id=user)
            first = tasks.ask_later.delay_for(user, "orphan")
            question = await asked(on_a, first.id)
            continuation_id = (await watcher.wait_for_event("task_waiting", task_id=first.id))[
                "continuation_id"
            ]
            assert (await on_a.confirm(question["callback_id"], True, "through A"))[
                "type"
            ] == "confirmation_received"
            assert doomed.process is not None
            claimed_by_a = f":{doomed.process.pid}:"
            stored = await eventually(
                lambda: claimed_by_a in question_of(publisher, question["callback_id"]).get("claimed_by", ""),
                True,
            )
            assert stored, question_of(publisher, question["callback_id"])
            await asyncio.sleep(0.5)
            assert "sent" not in question_of(publisher, question["callback_id"])
            assert runs(publisher.redis, continuation_id) == 0
            doomed.kill()
            value = await asyncio.to_thread(final_result, first, seconds(20))
            continued = [f for f in watcher.frames if f.get("type") == "task_continued"]
    finally:
        doomed.kill()
    assert value["feedback"] == "through A"
    assert value["runs"] == 1
    assert runs(publisher.redis, continuation_id) == 1
    stored = question_of(publisher, question["callback_id"])
    assert stored["claims"] == "2"
    assert claimed_by_a not in stored["claimed_by"]
    # A announced before it paused; the second claim does not announce again
    assert [f["continuation_id"] for f in continued] == [continuation_id]


@pytest.mark.usefixtures("worker", "celery_ws_server")
async def test_a_continuation_sent_twice_runs_once(celery_ws_client, publisher, user):
    """What a replica killed after the send, before recording it, leaves: the
    same continuation due again. It is sent again; the worker skips the repeat."""
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "twice-sent", hold=1.0)
        question = await asked(client, first.id)
        await client.confirm(question["callback_id"], True, "once")
        continuation_id = (await client.wait_for_event("task_continued", task_id=first.id))["continuation_id"]
        await client.wait_for_event("task_started", task_id=continuation_id)
        home = publisher.settings.keys.callback_home(question["callback_id"])
        publisher.redis.hdel(home.confirm(question["callback_id"]), "sent")
        publisher.redis.zadd(home.deferred, {question["callback_id"]: 0})
        await eventually(lambda: question_of(publisher, question["callback_id"]).get("claims"), "2")
        await eventually(lambda: "sent" in question_of(publisher, question["callback_id"]), True)
        value = await asyncio.to_thread(final_result, first, seconds(20))
        await asyncio.sleep(1.0)  # time for the repeated message to reach the worker
        started = [
            f
            for f in client.frames
            if f.get("type") == "task_started" and f.get("task_id") == continuation_id
        ]
    assert value["runs"] == 1
    assert runs(publisher.redis, continuation_id) == 1
    assert len(started) == 1  # the repeat is skipped before it says anything
    assert publisher.redis.get(publisher.settings.keys.run(continuation_id)) is not None


@pytest.mark.usefixtures("worker", "celery_ws_server")
async def test_the_timeout_racing_an_answer_continues_once(celery_ws_client, publisher, user):
    """Answers sent right around the deadline: each question ends one way or the
    other, atomically, and its continuation runs once with what won."""
    timeout = 2.0
    async with celery_ws_client(user_id=user) as client:
        firsts = [
            tasks.ask_later.delay_for(user, f"edge{i}", timeout=timeout, default=False) for i in range(6)
        ]
        questions = [await asked(client, first.id) for first in firsts]
        await asyncio.sleep(max(0.0, questions[0]["timestamp"] + timeout - 0.1 - time.time()))
        replies = []
        for i, question in enumerate(questions):
            replies.append(await client.confirm(question["callback_id"], True, f"just in time {i}"))
            await asyncio.sleep(0.04)
        values = [await asyncio.to_thread(final_result, first, seconds(20)) for first in firsts]
    outcomes = set()
    for reply, value in zip(replies, values, strict=True):
        assert value["runs"] == 1
        if reply["type"] == "confirmation_received":
            assert (value["proceed"], value["timed_out"]) == (True, False)
            outcomes.add("answered")
        else:
            assert reply["code"] == "confirmation_expired", reply
            assert (value["proceed"], value["timed_out"]) == (False, True)
            outcomes.add("expired")
    assert outcomes  # which side won each race is the machine's; each ended once


@pytest.mark.usefixtures("worker", "celery_ws_server")
async def test_cancel_while_waiting_sends_no_continuation(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "never")
        question = await asked(client, first.id)
        continuation_id = (await client.wait_for_event("task_waiting", task_id=first.id))["continuation_id"]
        assert (await client.cancel(first.id))["type"] == "cancel_received"
        cancelled = await client.wait_for_event("task_cancelled", task_id=first.id)
        late = await client.confirm(question["callback_id"], True)
        again = await client.cancel(first.id)
        await asyncio.sleep(1.5)  # a housekeeping round or more
    assert cancelled["workflow_id"] == first.id
    assert late["code"] == "already_answered"
    assert again["code"] == "task_finished"
    assert runs(publisher.redis, continuation_id) == 0
    assert (
        publisher.redis.zscore(
            publisher.settings.keys.callback_home(question["callback_id"]).deferred, question["callback_id"]
        )
        is None
    )
    assert not [
        f for f in client.frames if f.get("type") == "task_continued" and f.get("task_id") == first.id
    ]


@pytest.mark.usefixtures("worker", "celery_ws_server")
@pytest.mark.parametrize("target", ["workflow", "waiting task"])
async def test_cancel_of_a_workflow_waiting_in_its_continuation(celery_ws_client, publisher, user, target):
    """The second question is asked by the continuation: cancelling the
    workflow's id or the continuation's closes it; nothing runs after."""
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "deep", again=True)
        q1 = await asked(client, first.id)
        await client.confirm(q1["callback_id"], True)
        second = (await client.wait_for_event("task_continued", task_id=first.id))["continuation_id"]
        q2 = await asked(client, second)
        last = (await client.wait_for_event("task_waiting", task_id=second))["continuation_id"]
        cancelled = publisher.cancel(first.id if target == "workflow" else second, by="admin")
        event = await client.wait_for(
            lambda f: f.get("type") == "task_cancelled" and f.get("workflow_id") == first.id
        )
        late = await client.confirm(q2["callback_id"], True)
        await asyncio.sleep(1.5)
    assert cancelled.outcome == "ok"
    assert last in cancelled.revoke
    assert event["requested_by"] == "admin"
    assert late["code"] == "already_answered"
    assert runs(publisher.redis, last) == 0
    assert publisher.cancel(first.id).outcome == "finished"


@pytest.mark.usefixtures("worker")
async def test_publisher_cancel_wakes_a_blocking_question(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        await asked(client, result.id)
        assert publisher.cancel(result.id, by="ops").outcome == "ok"
        event = await client.wait_for_event("task_cancelled", task_id=result.id)
        # no revoke here (a Publisher has no Celery app): ProgressTask records REVOKED
        assert await eventually(lambda: result.state, "REVOKED") == "REVOKED"
    assert event["requested_by"] == "ops"
    assert publisher.cancelled_by(result.id) == "ops"


async def test_questions_wait_through_a_redis_restart(app: Celery, celery_ws_redis_url, tmp_path, user):
    """celery-ws' Redis (persistent) restarts while three questions wait, one
    of them expiring meanwhile; the broker stays up. Every continuation runs
    once: two with their answers, one timed out."""
    with RedisServer(persistent=True) as events_redis:
        queue = f"deferred-restart-{uuid.uuid4().hex[:8]}"
        broker_env = {"CELERY_BROKER_URL": celery_ws_redis_url, "CELERY_RESULT_BACKEND": celery_ws_redis_url}
        worker = WorkerProcess(
            app,
            events_redis.url,
            tmp_path,
            queue,
            broker_url=celery_ws_redis_url,
            env={"CELERY_RESULT_BACKEND": celery_ws_redis_url},
        )
        server = ServeProcess(events_redis.url, tmp_path, app="tests.prefork_app:app", env=broker_env)
        worker.start()
        server.start()
        counter = redis.Redis.from_url(events_redis.url)
        try:
            async with Client(
                server.url, reconnect=True, backoff_initial=0.1, backoff_max=1.0, timeout=seconds(10)
            ) as client:
                await client.subscribe(user_id=user)
                options = {"queue": queue}
                firsts = [
                    tasks.ask_later.apply_async_for(
                        user, ("r0",), {**options, "timeout": seconds(60)}, queue=queue
                    ),
                    tasks.ask_later.apply_async_for(
                        user, ("r1",), {**options, "timeout": seconds(60)}, queue=queue
                    ),
                    tasks.ask_later.apply_async_for(
                        user, ("r2",), {**options, "timeout": 3.0, "default": True}, queue=queue
                    ),
                ]
                questions = [await asked(client, first.id) for first in firsts]
                for first in firsts:
                    await client.wait_for_event("task_waiting", task_id=first.id)
                events_redis.stop()
                await asyncio.sleep(4)
                events_redis.start()
                for i in (0, 1):
                    reply = await client.confirm(questions[i]["callback_id"], True, f"after the restart {i}")
                    assert reply["type"] == "confirmation_received", reply
                values = [await asyncio.to_thread(final_result, first, seconds(40)) for first in firsts]
            continuations = [first.get(timeout=seconds(5))["continuation_id"] for first in firsts]
            assert [runs(counter, c) for c in continuations] == [1, 1, 1]
        finally:
            counter.close()
            server.stop()
            worker.stop()
    assert [v["feedback"] for v in values[:2]] == ["after the restart 0", "after the restart 1"]
    assert (values[2]["proceed"], values[2]["timed_out"]) == (True, True)
    assert all(v["owner"] == user and v["runs"] == 1 for v in values)
