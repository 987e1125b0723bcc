"""Resume: a client that comes back with ``last_event_id`` gets everything it
missed exactly once, in order, then live events; a page opened late gets the
task's state."""

from __future__ import annotations

import asyncio

import pytest

from celery_ws.protocol import event, event_order
from tests import tasks
from tests.helpers import seconds


def _notes(client, user):
    return [f for f in client.frames if f.get("type") == "note" and f.get("user_id") == user]


async def test_missed_events_arrive_once_in_order_then_live(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as first, celery_ws_client(user_id=user) as watcher:
        publisher.send_to_user(user, {"type": "note", "n": 0})
        seen = await first.wait_for_event("note", n=0)
        await first.close()  # first goes away; 50 events happen meanwhile
        missed = [publisher.send_to_user(user, {"type": "note", "n": n}) for n in range(1, 51)]
        # once the watcher has them, no see-all connection can catch them live any more
        await watcher.wait_for_event("note", n=50)

        async with celery_ws_client(user_id=user + "-elsewhere") as again:  # not a see-all connection
            # events published while the replay runs must not fall into the seam
            racing = asyncio.create_task(
                asyncio.to_thread(
                    lambda: [publisher.send_to_user(user, {"type": "note", "n": n}) for n in range(51, 101)]
                )
            )
            reply = await again.subscribe(user_id=user, last_event_id=seen["id"])
            await racing
            await again.wait_for_event("note", n=100)
            publisher.send_to_user(user, {"type": "note", "n": 101})
            await again.wait_for_event("note", n=101)
    assert reply["recovered"] is True
    notes = _notes(again, user)
    assert [f["n"] for f in notes] == list(range(1, 102))
    assert [f["id"] for f in notes[:50]] == missed
    ids = [event_order(f["id"]) for f in notes]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


async def test_an_id_older_than_the_window_is_reported_not_recovered(celery_ws_redis_url, user):
    from celery_ws import Publisher, Settings
    from celery_ws.client import Client
    from celery_ws.testing import ServerThread

    settings = Settings.load(redis_url=celery_ws_redis_url, history_max_events=10)
    publisher = Publisher(settings=settings)
    server = ServerThread(settings).start()
    try:
        first = publisher.send_to_user(user, {"type": "note", "n": 0})
        for n in range(1, 300):  # trims the user's history well past the first event
            publisher.send_to_user(user, {"type": "note", "n": n})
        async with Client(server.url, timeout=seconds(10)) as client:
            reply = await client.subscribe(user_id=user, last_event_id=first)
            current = await client.subscribe(
                user_id=user, last_event_id=publisher.send_to_user(user, {"type": "x"})
            )
        assert reply["recovered"] is False
        assert current["recovered"] is True
    finally:
        server.stop()
        publisher.close()


async def test_malformed_last_event_id_is_refused(celery_ws_client, user):
    async with celery_ws_client() as client:
        reply = await client.request(
            {"action": "subscribe", "user_id": user, "last_event_id": "x; DROP"}, "subscription_confirmed"
        )
    assert reply["code"] == "invalid_message"
    assert reply["field"] == "last_event_id"


@pytest.mark.usefixtures("worker")
async def test_a_page_opened_late_gets_the_task_state(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as watcher:
        result = tasks.report.delay_for(user, 7, step="validation")
        await watcher.wait_for_event("task_succeeded", task_id=result.id)
    async with celery_ws_client() as late:
        reply = await late.subscribe(task_id=result.id)
    state = reply["state"]
    assert state["progress"]["current"] == 7
    assert state["progress"]["progress"] == 100.0
    assert state["step_result"]["step"] == "validation"
    assert state["final"]["type"] == "task_succeeded"
    assert state["final"]["result"]["n"] == 7
    assert all("id" in value for value in state.values())


async def test_heartbeats_are_live_only(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        beat = publisher.emit(event("heartbeat", task_id=f"{user}-t", user_id=user, interval=1)).id
        await client.wait_for_event("heartbeat")
        after = publisher.send_to_user(user, {"type": "note", "n": 1})
    history = publisher.redis.xrange(publisher.settings.keys.home(user).user_events(user))
    ids = [entry_id.decode() for entry_id, _ in history]
    assert after in ids
    assert beat not in ids


@pytest.mark.usefixtures("worker")
async def test_a_late_viewer_never_sees_an_answered_question_as_open(celery_ws_client, user):
    """The stored step result keeps the ``callback_id`` it was asked with; a
    page opened after the answer, while the task still runs, would otherwise
    show a question nobody can answer any more."""
    async with celery_ws_client(user_id=user) as owner:
        result = tasks.ask_then_spin.delay_for(user)
        question = await owner.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))
        async with celery_ws_client() as early:
            before = (await early.subscribe(task_id=result.id))["state"]
        assert (await owner.confirm(question["callback_id"], True))["type"] == "confirmation_received"
        await owner.wait_for_event("task_progress", task_id=result.id, message="after the answer")
        async with celery_ws_client() as late:
            after = (await late.subscribe(task_id=result.id))["state"]
        await owner.cancel(result.id)
        await owner.wait_for_event("task_cancelled", task_id=result.id)
    assert before["step_result"]["callback_id"] == question["callback_id"]
    assert after["final"] is None  # still running: the task's end did not close the question
    assert after["step_result"]["step"] == "review"
    assert after["step_result"]["callback_id"] is None
