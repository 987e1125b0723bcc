"""confirm_step() inside real tasks: answered, refused, timed out, cancelled."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from celery.states import FAILURE, REVOKED

from tests import tasks
from tests.helpers import eventually, seconds

pytestmark = pytest.mark.usefixtures("worker")


async def _request(client, task_id):
    return await client.wait_for(
        lambda f: f.get("type") == "task_step_result" and f.get("task_id") == task_id and f.get("callback_id")
    )


async def test_proceed_answer_reaches_the_waiting_task(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await _request(client, result.id)
        assert request["step"] == "review"
        assert request["step_number"] == 1
        assert request["message"] == "Continue?"
        assert request["result"] == {"rows": 3}
        reply = await client.confirm(request["callback_id"], True, "looks fine")
        assert reply == {
            "type": "confirmation_received",
            "callback_id": request["callback_id"],
            "proceed": True,
        }
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
        answered = await client.wait_for_event("confirmation_answered", task_id=result.id)
    assert done["result"]["proceed"] is True
    assert done["result"]["feedback"] == "looks fine"
    assert done["result"]["answered_by"] == user
    assert done["result"]["timed_out"] is False
    assert answered["callback_id"] == request["callback_id"]
    assert answered["answered_by"] == user
    types = [f["type"] for f in client.frames if f.get("task_id") == result.id]
    assert types.index("confirmation_answered") < types.index("task_succeeded")  # told before what follows


async def test_the_question_closes_while_the_task_that_asked_says_nothing(celery_ws_client, user):
    """``confirm_step()`` returns without waiting for its closing event to be
    written; the event is written within ``progress_interval`` all the same,
    not only when the task next speaks."""
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask_then_sleep.delay_for(user, seconds(4))
        request = await _request(client, result.id)
        await client.confirm(request["callback_id"], True)
        answered_at = time.monotonic()
        await client.wait_for_event("confirmation_answered", task_id=result.id)
        # well within the task's silence (and, most likely, before its next heartbeat)
        assert time.monotonic() - answered_at < seconds(1)
        assert "task_succeeded" not in [f["type"] for f in client.frames if f.get("task_id") == result.id]
        await client.wait_for_event("task_succeeded", task_id=result.id)


async def test_refusal_returns_proceed_false(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await _request(client, result.id)
        await client.confirm(request["callback_id"], False, "no")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"]["proceed"] is False
    assert done["result"]["feedback"] == "no"


async def test_second_answer_is_refused_and_first_one_counts(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client, celery_ws_client(user_id=user) as tab2:
        result = tasks.ask.delay_for(user)
        request = await _request(client, result.id)
        first, second = await asyncio.gather(
            client.confirm(request["callback_id"], True, "first"),
            tab2.confirm(request["callback_id"], False, "second"),
        )
        replies = sorted([first["type"], second["type"]])
        assert replies == ["confirmation_received", "error"]
        error = first if first["type"] == "error" else second
        assert error["code"] == "already_answered"
        winner = "first" if first["type"] == "confirmation_received" else "second"
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
        assert done["result"]["feedback"] == winner
        late = await client.confirm(request["callback_id"], True)
        assert late["type"] == "error"
        assert late["code"] == "already_answered"


async def test_answer_sent_before_the_task_waits_is_not_lost(celery_ws_client, user):
    """The request is stored before it is announced: answering the very first
    frame works even though the task may not be blocking on BLPOP yet."""
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await _request(client, result.id)
        await client.confirm(request["callback_id"], True)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"]["proceed"] is True


async def test_timeout_without_default_fails_the_task(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user, timeout=0.5)
        request = await _request(client, result.id)
        expired = await client.wait_for_event("confirmation_expired", task_id=result.id)
        failed = await client.wait_for_event("task_failed", task_id=result.id)
        late = await client.confirm(request["callback_id"], True)
    assert expired["callback_id"] == request["callback_id"]
    assert failed["error_code"] == "ConfirmationTimeout"
    assert late["type"] == "error"
    assert late["code"] == "confirmation_expired"


@pytest.mark.parametrize("default", [True, False])
async def test_timeout_with_default_returns_the_default(celery_ws_client, user, default):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user, timeout=0.3, default=default)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"]["proceed"] is default
    assert done["result"]["timed_out"] is True


async def test_pending_confirmation_is_sent_to_a_late_subscriber(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as first:
        result = tasks.ask.delay_for(user)
        request = await _request(first, result.id)
    async with celery_ws_client() as late:
        await late.subscribe(user_id=user)
        resent = await _request(late, result.id)
        assert resent["callback_id"] == request["callback_id"]
        assert resent["id"] == request["id"]
        await late.confirm(resent["callback_id"], True)
        await late.wait_for_event("task_succeeded", task_id=result.id)


async def test_cancel_wakes_a_waiting_task_and_marks_it_revoked(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await _request(client, result.id)
        reply = await client.cancel(result.id)
        assert reply == {"type": "cancel_received", "task_id": result.id}
        cancelled = await client.wait_for_event("task_cancelled", task_id=result.id)
        assert cancelled["requested_by"] == user
        late = await client.confirm(request["callback_id"], True)
        assert late["type"] == "error"
        assert late["code"] == "already_answered"
        state = await eventually(lambda: result.state, REVOKED)
    assert state == REVOKED
    terminal = [
        f["type"]
        for f in client.frames
        if f.get("task_id") == result.id and f["type"] in ("task_succeeded", "task_failed", "task_cancelled")
    ]
    assert terminal == ["task_cancelled"]


async def test_cancel_stops_a_running_task_at_its_next_progress(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.spin.delay_for(user)
        await client.wait_for_event("task_progress", task_id=result.id)
        await client.cancel(result.id)
        await client.wait_for_event("task_cancelled", task_id=result.id)
        state = await eventually(lambda: result.state, REVOKED)
    assert state == REVOKED
    assert not [f for f in client.frames if f.get("task_id") == result.id and f["type"] == "task_succeeded"]


@pytest.mark.parametrize("where", ["running", "waiting on a question"])
async def test_a_cancelled_task_is_stored_revoked_and_never_failed_first(
    celery_ws_client, celery_ws_redis_url, user, where
):
    """Every state Celery's Redis backend publishes for the task: an
    ``AsyncResult`` keeps the first finished state it reads, so a FAILURE
    stored before the REVOKED would stay the caller's answer."""
    states = redis.Redis.from_url(celery_ws_redis_url).pubsub()
    async with celery_ws_client(user_id=user) as client:
        result = (tasks.spin if where == "running" else tasks.ask).delay_for(user)
        states.subscribe(f"celery-task-meta-{result.id}")
        if where == "running":
            await client.wait_for_event("task_progress", task_id=result.id)
        else:
            await _request(client, result.id)
        await client.cancel(result.id)
        assert await eventually(lambda: result.state, REVOKED) == REVOKED
    published = []
    for _ in range(100):
        message = states.get_message(timeout=0.05)
        if message is None:
            break
        if message["type"] == "message":
            published.append(json.loads(message["data"])["status"])
    states.close()
    assert FAILURE not in published and published[-1:] == [REVOKED], published


async def test_cancel_of_a_queued_task_stops_it_before_it_runs(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.report.apply_async_for(user, (3,), countdown=1.5)
        await client.wait_for_event("task_sent", task_id=result.id)
        await client.cancel(result.id)
        await client.wait_for_event("task_cancelled", task_id=result.id)
        state = await eventually(lambda: result.state, REVOKED, timeout=seconds(10))
    assert state == REVOKED
    started = [f for f in client.frames if f.get("task_id") == result.id and f["type"] == "task_progress"]
    assert started == []


async def test_cancel_of_a_finished_task_is_refused(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.report.delay_for(user, 1)
        await client.wait_for_event("task_succeeded", task_id=result.id)
        reply = await client.cancel(result.id)
    assert reply["type"] == "error"
    assert reply["code"] == "task_finished"
