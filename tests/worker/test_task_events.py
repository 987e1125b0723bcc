"""A real worker's tasks reach their owner's WebSocket clients: every lifecycle
event, progress, step results, chains and child tasks."""

from __future__ import annotations

import asyncio

import pytest
from celery import chain

from tests import tasks
from tests.helpers import seconds

pytestmark = pytest.mark.usefixtures("worker")


async def test_progress_step_result_and_success_reach_the_owner(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.report.delay_for(user, 20, step="validation")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)

    types = [f["type"] for f in client.frames if f.get("task_id") == result.id]
    assert types[0] == "task_sent"
    assert types[1] == "task_started"
    assert types[-1] == "task_succeeded"
    progress = [f for f in client.frames if f["type"] == "task_progress"]
    assert progress, "no progress event"
    assert progress[-1]["current"] == 20
    assert progress[-1]["total"] == 20
    assert progress[-1]["progress"] == 100.0
    assert progress[-1]["message"] == "working"
    step = next(f for f in client.frames if f["type"] == "task_step_result")
    assert step["step"] == "validation"
    assert step["result"] == {"n": 20}
    assert step["callback_id"] is None
    assert types.index("task_step_result") > types.index("task_progress")
    assert done["result"] == {"n": 20, "ratio": "1.5"}
    stored = [f for f in client.frames[1:] if f["type"] != "heartbeat"]  # heartbeats are live only, no id
    for frame in client.frames[1:]:
        assert {"type", "task_id", "user_id", "timestamp"} <= frame.keys()
        assert frame["user_id"] == user
    assert all("id" in f for f in stored)
    ids = [tuple(map(int, f["id"].split("-"))) for f in stored]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


async def test_progress_is_coalesced_but_the_last_value_arrives(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.report.delay_for(user, 50_000)
        await client.wait_for_event("task_succeeded", task_id=result.id)
    progress = [f for f in client.frames if f["type"] == "task_progress"]
    assert 1 <= len(progress) < 1000
    assert progress[-1]["current"] == 50_000


async def test_a_task_run_inside_another_reports_under_its_own_id(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        outer = tasks.nest.delay_for(user)
        await client.wait_for_event("task_succeeded", task_id=outer.id)
    inner_id = outer.get(timeout=seconds(10))
    progress = [f for f in client.frames if f["type"] == "task_progress"]
    inner = [f for f in progress if f["task_id"] == inner_id]
    mine = [f for f in progress if f["task_id"] == outer.id]
    assert inner
    assert {f["message"] for f in inner} == {"depth 0"}
    assert inner[-1]["current"] == 3
    assert mine
    assert {f["message"] for f in mine} == {"depth 1"}
    assert mine[-1]["current"] == 3


async def test_failure_carries_error_code_and_message(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.fail.delay_for(user)
        failed = await client.wait_for_event("task_failed", task_id=result.id)
    assert failed["error_code"] == "ValueError"
    assert failed["error_message"] == "the input is broken"


async def test_retry_is_reported_then_success(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.retry_once.delay_for(user)
        retrying = await client.wait_for_event("task_retrying", task_id=result.id)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert retrying["reason"] == "RuntimeError: first try fails"
    assert retrying["retries"] == 1
    types = [f["type"] for f in client.frames if f.get("task_id") == result.id]
    assert types == ["task_sent", "task_started", "task_retrying", "task_started", "task_succeeded"]
    assert done["result"] == "second try"


async def test_tasks_without_owner_emit_nothing(celery_ws_client, user, app):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.report.delay(3)
        await asyncio.to_thread(result.get, timeout=seconds(10))
        owned = tasks.report.delay_for(user, 1)
        await client.wait_for_event("task_succeeded", task_id=owned.id)
    assert not [f for f in client.frames if f.get("task_id") == result.id]


async def test_two_users_each_see_only_their_own_task(celery_ws_client, user):
    other = user + "-b"
    async with celery_ws_client(user_id=user) as alice, celery_ws_client(user_id=other) as bob:
        mine = tasks.report.delay_for(user, 5)
        theirs = tasks.report.delay_for(other, 5)
        await alice.wait_for_event("task_succeeded", task_id=mine.id)
        await bob.wait_for_event("task_succeeded", task_id=theirs.id)
    assert {f.get("task_id") for f in alice.frames[1:]} == {mine.id}
    assert {f.get("task_id") for f in bob.frames[1:]} == {theirs.id}


async def test_subscribing_to_a_task_shows_that_task_only(celery_ws_client, user):
    first = tasks.report.apply_async_for(user, (2,), countdown=1)
    second = tasks.report.apply_async_for(user, (2,), countdown=1)
    async with celery_ws_client(task_id=first.id) as client:
        await client.wait_for_event("task_succeeded", task_id=first.id)
        await asyncio.to_thread(second.get, timeout=seconds(10))
    assert {f.get("task_id") for f in client.frames[1:]} == {first.id}


async def test_child_task_reports_to_the_parents_owner(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        parent = tasks.spawn.delay_for(user)
        done = await client.wait_for_event("task_succeeded", task_id=parent.id)
        child_done = await client.wait_for_event("task_succeeded", task_id=done["result"])
    assert child_done["user_id"] == user


async def test_chain_children_report_to_the_same_owner(celery_ws_client, user):
    workflow = chain(tasks.report.s(2), tasks.report.si(3), tasks.report.si(4))
    async with celery_ws_client(user_id=user) as client:
        workflow.apply_async(headers={"celery_ws_user": user})
        # order across tasks is not guaranteed: Celery sends the next link
        # before the previous one's success signal
        await client.wait_for(lambda _: sum(f["type"] == "task_succeeded" for f in client.frames) == 3)
    succeeded = [f for f in client.frames if f["type"] == "task_succeeded"]
    assert sorted(f["result"]["n"] for f in succeeded) == [2, 3, 4]
    assert {f["user_id"] for f in succeeded} == {user}


async def test_events_arrive_after_redis_forgets_its_scripts(celery_ws_client, publisher, user):
    """A Redis restart or failover loses the Lua scripts; no batch may be lost with them."""
    from celery_ws.protocol import message_event

    async with celery_ws_client(user_id=user) as client:
        publisher.redis.script_flush()
        result = tasks.report.delay_for(user, 3, step="after-flush")
        await client.wait_for_event("task_succeeded", task_id=result.id)
        publisher.redis.script_flush()
        publisher.emit_many([message_event({"type": "after_flush", "n": i}, user_id=user) for i in range(3)])
        await client.wait_for(lambda f: f.get("type") == "after_flush" and f["n"] == 2)
    steps = [f["step"] for f in client.frames if f["type"] == "task_step_result"]
    assert steps == ["after-flush"]
    assert [f["n"] for f in client.frames if f["type"] == "after_flush"] == [0, 1, 2]


def test_progress_interval_zero_writes_each_value_at_once(celery_ws_settings, publisher):
    """``progress_interval=0`` turns coalescing off: a value reported while the
    writer sleeps wakes it, and is stored at once."""
    import time
    import uuid

    from celery_ws.protocol import loads
    from celery_ws.worker.emitter import Emitter

    emitter = Emitter(celery_ws_settings.model_copy(update={"progress_interval": 0}))
    task_id = uuid.uuid4().hex
    report = emitter.reporter(task_id, "someone")

    def stored_within(seconds: float, count: int) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:
            entries = publisher.redis.xrange(celery_ws_settings.keys.home("someone").task_events(task_id))
            values = [loads(fields[b"d"])["current"] for _, fields in entries]
            if len(values) >= count or time.monotonic() > deadline:
                return values
            time.sleep(0.005)

    for i in range(1, 4):
        assert report(i, 3, "step") is False
        assert stored_within(1.0, i) == list(range(1, i + 1))
