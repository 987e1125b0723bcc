"""Deferred questions (``ProgressTask.ask``) on the suite's embedded worker and
server: the server has the Celery app (``celery_ws_send_task``), so it sends
continuations. The task asks and returns; the answer (or the timeout) runs the
continuation once, with the answer, under the owner, in the same workflow."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery import Celery

from celery_ws import (
    CeleryWS,
    ContinuationUnavailable,
    ProgressTask,
    Publisher,
    TaskCancelled,
    TaskStepResult,
    final_result,
)
from celery_ws.deferred import is_waiting
from tests import tasks
from tests.helpers import seconds

pytestmark = pytest.mark.usefixtures("worker")


def runs(publisher: Publisher, task_id: str) -> int:
    return int(publisher.redis.get(tasks.runs_key(task_id)) or 0)


async def test_ask_returns_at_once_and_the_answer_runs_the_continuation(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "a")
        question = await client.wait_for(lambda f: f.get("task_id") == first.id and f.get("callback_id"))
        waiting = await client.wait_for_event("task_waiting", task_id=first.id)
        marker = first.get(timeout=seconds(10))  # the first task is done: SUCCESS with the marker
        assert first.state == "SUCCESS"
        assert is_waiting(marker)
        assert waiting["callback_id"] == question["callback_id"] == marker["callback_id"]
        assert waiting["workflow_id"] == first.id
        continuation_id = waiting["continuation_id"]
        reply = await client.confirm(question["callback_id"], True, "go on")
        assert reply["type"] == "confirmation_received"
        continued = await client.wait_for_event("task_continued", task_id=first.id)
        done = await client.wait_for_event("task_succeeded", task_id=continuation_id)
    assert continued["continuation_id"] == continuation_id
    assert continued["workflow_id"] == first.id
    assert done["workflow_id"] == first.id
    assert done["parent_task_id"] == first.id
    assert done["result"]["proceed"] is True
    assert done["result"]["feedback"] == "go on"
    assert done["result"]["answered_by"] == user
    assert done["result"]["owner"] == user
    assert done["result"]["workflow_id"] == first.id
    assert done["result"]["data_type"] == "NoneType"
    # no terminal event for the first task: the workflow ended in its continuation
    types = [f["type"] for f in client.frames if f.get("task_id") == first.id]
    assert "task_succeeded" not in types
    assert types.index("task_waiting") < types.index("task_continued")
    # every event of the continuation carries the workflow
    of_continuation = [f for f in client.frames if f.get("task_id") == continuation_id and "id" in f]
    assert {f["type"] for f in of_continuation} >= {"task_started", "task_progress", "task_succeeded"}
    assert all(f.get("workflow_id") == first.id for f in of_continuation)
    answered = [f for f in client.frames if f.get("type") == "confirmation_answered"]
    assert [f["callback_id"] for f in answered] == [question["callback_id"]]
    assert final_result(first, timeout=seconds(10))["feedback"] == "go on"
    assert runs(publisher, continuation_id) == 1


async def test_the_worker_slot_is_free_while_the_question_waits(celery_ws_client, publisher, user):
    """Four threads in the embedded worker; eight questions wait, none holds one."""
    async with celery_ws_client(user_id=user) as client:
        asked = [tasks.ask_later.delay_for(user, f"q{i}") for i in range(8)]
        for result in asked:
            assert is_waiting(result.get(timeout=seconds(10)))
        ordinary = tasks.report.delay_for(user, 3)
        await client.wait_for_event("task_succeeded", task_id=ordinary.id)
        requests = {}
        for result in asked:
            request = await client.wait_for(
                lambda f, r=result: f.get("task_id") == r.id and f.get("callback_id")
            )
            requests[result.id] = request["callback_id"]
        for i, result in enumerate(asked):
            await client.confirm(requests[result.id], i % 2 == 0, f"answer {i}")
        for i, result in enumerate(asked):
            value = final_result(result, timeout=seconds(20))
            assert (value["tag"], value["proceed"], value["feedback"]) == (f"q{i}", i % 2 == 0, f"answer {i}")
            assert value["runs"] == 1


async def test_typed_answers_and_assignees(celery_ws_client, user):
    reviewer = f"{user}-reviewer"
    async with (
        celery_ws_client(user_id=user) as owner_client,
        celery_ws_client(user_id=reviewer) as reviewer_client,
    ):
        first = tasks.ask_later.delay_for(user, "typed", typed=True, assignees=[reviewer])
        asked = await reviewer_client.wait_for(
            lambda f: f.get("task_id") == first.id and f.get("callback_id")
        )
        assert asked["answer_schema"]["properties"]["rows"]["type"] == "integer"
        refused = await owner_client.confirm(asked["callback_id"], True, data={"rows": 1})
        assert refused["code"] == "forbidden"  # only the assignee may answer
        wrong = await reviewer_client.confirm(asked["callback_id"], True, data={"rows": "many"})
        assert wrong["code"] == "invalid_answer"
        ok = await reviewer_client.confirm(asked["callback_id"], True, "12 rows", data={"rows": 12})
        assert ok["type"] == "confirmation_received"
        closed = await reviewer_client.wait_for_event(
            "confirmation_answered", callback_id=asked["callback_id"]
        )
        value = final_result(first, timeout=seconds(20))
    assert closed["answered_by"] == reviewer
    assert value["data_type"] == "RowLimit"
    assert value["data"] == {"rows": 12, "note": ""}
    assert value["answered_by"] == reviewer
    assert value["owner"] == user  # the continuation runs under the owner, whoever answered


@pytest.mark.parametrize("default", [False, None])
async def test_a_timeout_sends_the_continuation_with_the_default_or_the_timeout(
    celery_ws_client, user, default
):
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "late", timeout=1.0, default=default)
        question = await client.wait_for(lambda f: f.get("task_id") == first.id and f.get("callback_id"))
        expired = await client.wait_for_event("confirmation_expired", callback_id=question["callback_id"])
        continued = await client.wait_for_event("task_continued", task_id=first.id)
        late = await client.confirm(question["callback_id"], True)
        value = final_result(first, timeout=seconds(20))
    assert expired["task_id"] == first.id
    assert continued["timed_out"] is True
    assert late["code"] == "confirmation_expired"
    if default is None:
        assert value["timeout"] is True  # a ConfirmationTimeout, handled by the continuation
        assert value["callback_id"] == question["callback_id"]
    else:
        assert (value["proceed"], value["timed_out"]) == (False, True)


async def test_a_workflow_that_asks_twice_is_followed_from_its_first_task(celery_ws_client, user):
    """A client subscribed to the first task's id sees the whole workflow: both
    questions, both continuations, the end; so does one that subscribes late."""
    async with celery_ws_client(user_id=user) as owner:
        first = tasks.ask_later.delay_for(user, "twice", again=True)
        async with celery_ws_client(task_id=first.id) as watcher:
            q1 = await watcher.wait_for(lambda f: f.get("callback_id") and f.get("step") == "review")
            await owner.confirm(q1["callback_id"], True, "first")
            q2 = await watcher.wait_for(lambda f: f.get("callback_id") and f.get("step") == "second")
            assert q2["workflow_id"] == first.id and q2["task_id"] != first.id
            assert q2["parent_task_id"] == first.id
            async with celery_ws_client(task_id=first.id) as joining:  # a late viewer gets the open question
                resent = await joining.wait_for(
                    lambda f: (
                        f.get("type") == "task_step_result" and f.get("callback_id") == q2["callback_id"]
                    )
                )
                assert resent["id"] == q2["id"]
            await owner.confirm(q2["callback_id"], True, "second")
            end = await watcher.wait_for(
                lambda f: f.get("type") == "task_succeeded" and f.get("workflow_id") == first.id
            )
        async with celery_ws_client() as late:
            reply = await late.subscribe(task_id=first.id, last_event_id="0-0")
            await late.wait_for(lambda f: f.get("id") == end["id"])
            replayed = [f for f in late.frames if "id" in f]
    continued = [f for f in watcher.frames if f.get("type") == "task_continued"]
    assert [f["task_id"] for f in continued] == [first.id, q2["task_id"]]
    assert "parent_task_id" not in continued[0]  # the first task continues nothing
    assert continued[1]["parent_task_id"] == first.id
    assert end["parent_task_id"] == q2["task_id"]
    assert end["result"]["tag"] == "twice-2"
    assert end["result"]["feedback"] == "second"
    watched = [f["type"] for f in watcher.frames if "id" in f and f["type"] != "heartbeat"]
    assert watched.count("task_waiting") == 2
    assert watched.count("task_continued") == 2
    assert watched[-1] == "task_succeeded"
    # the replay from the start holds what the watcher saw live (it subscribed
    # after the first events), in the same order
    live = [f["id"] for f in watcher.frames if "id" in f and f["type"] != "heartbeat"]
    assert [f["id"] for f in replayed if f["type"] != "heartbeat"][-len(live) :] == live
    assert reply["state"]["final"]["type"] == "task_succeeded"
    assert reply["state"]["final"]["workflow_id"] == first.id


@pytest.fixture(scope="module")
def lonely(celery_ws_redis_url: str) -> Celery:
    """An app whose celery-ws keys (prefix ``cws-nobody``) no server follows,
    its tasks run eagerly in the test."""
    lonely = Celery("lonely", broker="memory://", backend="cache+memory://", set_as_current=False)
    CeleryWS(lonely, redis_url=celery_ws_redis_url, key_prefix="cws-nobody")

    @lonely.task(base=ProgressTask, bind=True, name="lonely.then")
    def then(self: ProgressTask, answer: Any, *args: Any) -> None:
        return None

    @lonely.task(name="lonely.plain")
    def plain() -> None:
        return None

    @lonely.task(base=ProgressTask, bind=True, name="lonely.asks")
    def asks(self: ProgressTask, which: str) -> dict[str, str]:
        then_of = {
            "continuation": then.s(),
            "plain task": plain.s(),
            "chain": then.s() | then.s(),
            "arguments not JSON": then.s(object()),
        }
        return self.ask(TaskStepResult(step="s", message="?", status="waiting"), then=then_of[which])

    return lonely


@pytest.mark.parametrize(
    ("which", "error", "text"),
    [
        ("continuation", ContinuationUnavailable, "celery-ws serve --app"),
        ("plain task", TypeError, "base=ProgressTask"),
        ("chain", TypeError, "one task's signature"),
        ("arguments not JSON", TypeError, "JSON"),
    ],
)
def test_ask_refuses_at_once(lonely, celery_ws_redis_url, which, error, text):
    """No server with the Celery app is registered under this key prefix, or
    ``then`` cannot be a continuation: ask() raises in the task, nothing is stored."""
    outcome = lonely.tasks["lonely.asks"].apply((which,), headers={"celery_ws_user": "u-lonely"})
    assert isinstance(outcome.result, error), outcome.result
    assert text in str(outcome.result)
    client = redis.Redis.from_url(celery_ws_redis_url)
    assert client.zcard("cws-nobody:deferred") == 0
    assert client.zcard("cws-nobody:pending") == 0
    client.close()


async def test_final_result_raises_when_the_waiting_workflow_is_cancelled(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        first = tasks.ask_later.delay_for(user, "cancelled")
        await client.wait_for_event("task_waiting", task_id=first.id)
        cancelled = publisher.cancel(first.id, by="admin")
        event = await client.wait_for_event("task_cancelled", task_id=first.id)
    assert cancelled.outcome == "ok"
    assert event["requested_by"] == "admin"
    with pytest.raises(TaskCancelled):
        final_result(first, timeout=seconds(5))


async def test_the_readme_example_runs(celery_ws_client, user):
    """README's deferred example (tests/tasks.py): import, ask, write with the answer."""
    async with celery_ws_client(user_id=user) as client:
        first = tasks.import_rows_later.delay_for(user, "orders.csv", rows=20)
        question = await client.wait_for(lambda f: f.get("task_id") == first.id and f.get("callback_id"))
        assert question["message"] == "2 rows have errors. Write the others?"
        await client.confirm(question["callback_id"], True, "write them")
        assert final_result(first, timeout=seconds(20)) == {"written": 18, "feedback": "write them"}
        declined = tasks.import_rows_later.delay_for(user, "orders.csv", rows=10)
        question = await client.wait_for(lambda f: f.get("task_id") == declined.id and f.get("callback_id"))
        await client.confirm(question["callback_id"], False)
        assert final_result(declined, timeout=seconds(20)) == {
            "written": 0,
            "stopped_by": user,
            "timed_out": False,
        }


async def test_a_broken_stored_question_does_not_stop_the_others(celery_ws_client, publisher, user):
    """A deferred question whose stored continuation cannot be read (written by
    hand here) is logged and left; the others continue, housekeeping goes on."""
    home = publisher.settings.keys.home(user)
    broken = f"broken-{user}"
    publisher.redis.hset(
        home.confirm(broken),
        mapping={
            "state": "answered",
            "mode": "deferred",
            "then": "{not json",
            "continuation_id": f"c-{broken}",
        },
    )
    publisher.redis.zadd(home.deferred, {broken: 0})
    try:
        async with celery_ws_client(user_id=user) as client:
            first = tasks.ask_later.delay_for(user, "beside the broken one")
            question = await client.wait_for(lambda f: f.get("task_id") == first.id and f.get("callback_id"))
            await client.confirm(question["callback_id"], True)
            assert final_result(first, timeout=seconds(20))["runs"] == 1
            later = tasks.ask_later.delay_for(user, "swept", timeout=1.0, default=True)
            assert final_result(later, timeout=seconds(20))["timed_out"] is True  # sent by housekeeping
    finally:
        publisher.redis.delete(home.confirm(broken))
        publisher.redis.zrem(home.deferred, broken)
