"""The Python client and ``celery-ws watch`` follow a workflow (issue 13: a task
that asks without holding its worker, and the continuation that runs with the
answer) from the first task's id, against a real server and Redis.

The workflow's events are published through the suite's Redis by
``tests.workflow_events.Workflow`` exactly as the contract describes them, with
a real question answered through the server; the server routes events by
``workflow_id`` to a connection subscribed to the first task only.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from celery_ws import Settings, issue_token
from celery_ws.client import Client
from celery_ws.protocol import event
from celery_ws.testing import ServerThread
from tests.e2e.test_watch import Terminal
from tests.helpers import seconds
from tests.workflow_events import QUESTION, Workflow

SECRET = "workflow-tests-secret-0123456789abcdefghij"
#: how long a test checks that something does NOT happen (behaviour, not patience)
QUIET = 0.5


#: the continuation's result once the question is answered yes, with "go"
RESULT = {"written": 2, "proceed": True, "feedback": "go"}


# -- the Python client --------------------------------------------------------------------


async def test_wait_for_workflow_returns_the_continuations_end(celery_ws_client, celery_ws_settings, user):
    async with celery_ws_client(user_id=user) as client:
        workflow = await asyncio.to_thread(Workflow(celery_ws_settings, user).start)
        question = await client.wait_for_event("task_step_result", task_id=workflow.id)
        assert question["callback_id"] == workflow.callback_id
        waiting = await client.wait_for_event("task_waiting", task_id=workflow.id)
        assert waiting["continuation_id"] == workflow.continuation_id
        with pytest.raises(TimeoutError):  # task_waiting is not an end
            await client.wait_for_workflow(workflow.id, timeout=QUIET)

        assert (await client.confirm(question["callback_id"], True, "go"))["type"] == "confirmation_received"
        end = await client.wait_for_workflow(workflow.id, timeout=seconds(10))
        await asyncio.to_thread(workflow.join)

    assert end["type"] == "task_succeeded"
    assert end["task_id"] == workflow.continuation
    assert end["workflow_id"] == end["parent_task_id"] == workflow.id
    assert end["result"] == RESULT
    continued = [f for f in client.frames if f.get("type") == "task_continued"]
    assert len(continued) == 2  # sent at least once: here twice, and still one end


async def test_a_task_that_never_asks_is_a_workflow_of_one(
    celery_ws_client, celery_ws_settings, user, publisher
):
    task_id = f"plain-{uuid.uuid4().hex[:12]}"
    async with celery_ws_client(user_id=user) as client:
        for type_, fields in (("task_started", {}), ("task_succeeded", {"result": 7})):
            await asyncio.to_thread(publisher.emit, event(type_, task_id=task_id, user_id=user, **fields))
        end = await client.wait_for_workflow(task_id)
    assert (end["type"], end["task_id"], end["result"]) == ("task_succeeded", task_id, 7)

    # subscribed after the end: the subscription's state says how it ended
    async with celery_ws_client(task_id=task_id) as late:
        end = await late.wait_for_workflow(task_id, timeout=seconds(5))
    assert (end["type"], end["task_id"], end["result"]) == ("task_succeeded", task_id, 7)


async def test_cancelling_a_waiting_workflow_ends_it(celery_ws_client, celery_ws_settings, user):
    async with celery_ws_client(user_id=user) as client:
        workflow = await asyncio.to_thread(Workflow(celery_ws_settings, user).start)
        await client.wait_for_event("task_waiting", task_id=workflow.id)
        assert (await client.cancel(workflow.id))["type"] == "cancel_received"
        end = await client.wait_for_workflow(workflow.id)
        await asyncio.to_thread(workflow.join)
    assert (end["type"], end["task_id"]) == ("task_cancelled", workflow.id)
    assert workflow.cancelled and workflow.answer is None  # the question closed; no continuation


async def test_wait_for_workflow_on_the_first_tasks_subscription(
    celery_ws_client, celery_ws_server, celery_ws_settings, user
):
    workflow = await asyncio.to_thread(Workflow(celery_ws_settings, user).send)
    async with celery_ws_client(task_id=workflow.id) as client:
        await asyncio.to_thread(workflow.start)
        question = await client.wait_for(lambda f: f.get("callback_id") == workflow.callback_id)
        await client.confirm(question["callback_id"], True, "go")
        end = await client.wait_for_workflow(workflow.id)
        await asyncio.to_thread(workflow.join)
    assert (end["type"], end["task_id"], end["workflow_id"]) == (
        "task_succeeded",
        workflow.continuation,
        workflow.id,
    )


# -- celery-ws watch ----------------------------------------------------------------------


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def watch(terminals: list[Terminal], *args: str) -> Terminal:
    term = Terminal([sys.executable, "-m", "celery_ws", "watch", *args])
    terminals.append(term)
    return term


def still_running(term: Terminal) -> bool:
    """Whether the watcher is still running after a short while."""
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        term._pump(0.05)
    return term.process.poll() is None


def answer_and_finish(term: Terminal, workflow: Workflow) -> str:
    """Answer the question at the prompt; the watcher ends with the continuation's success."""
    term.expect("Proceed?")
    term.expect("waiting for your answer")
    assert still_running(term), term.screen  # task_waiting did not end the watch
    term.type("y go\n")
    assert term.wait() == 0, term.screen
    workflow.join()
    screen = term.screen
    assert QUESTION in screen and "sent: proceed=True" in screen, screen
    assert screen.count("continues with the answer") == 1, screen  # task_continued came twice
    assert "2 rows written" in screen and "'written': 2" in screen, (
        screen
    )  # the continuation's step and result
    assert screen.index("waiting for your answer") < screen.index("succeeded"), screen
    return screen


def test_watching_a_user_follows_the_workflow_to_its_end(
    celery_ws_server, celery_ws_settings, user, terminals
):
    term = watch(terminals, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    workflow = Workflow(celery_ws_settings, user).start()
    answer_and_finish(term, workflow)


def test_watching_the_first_task_with_a_token_follows_its_continuation(celery_ws_redis_url, user, terminals):
    """A token connection gets its user's events: the watcher must pick the
    continuation's out by ``workflow_id``, and exit only when it ends."""
    settings = Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)
    server = ServerThread(settings).start()
    try:
        workflow = Workflow(settings, user).send()
        token = issue_token(user, ttl=600, settings=settings)
        term = watch(terminals, workflow.id, "--url", server.url, "--token", token)
        term.expect("Watching task")
        workflow.start()
        other = Workflow(settings, user)  # another task of the same user, ending first: not watched
        other.emit("task_succeeded", other.id, result="not this one")
        answer_and_finish(term, workflow)
        assert "not this one" not in term.screen
    finally:
        server.stop()


def test_watching_the_first_task_follows_its_continuation(
    celery_ws_server, celery_ws_settings, user, terminals
):
    workflow = Workflow(celery_ws_settings, user).send()
    term = watch(terminals, workflow.id, "--url", celery_ws_server.url)
    term.expect("Watching task")
    workflow.start()
    answer_and_finish(term, workflow)


def test_a_waiting_workflow_cancelled_exits_2(celery_ws_server, celery_ws_settings, user, terminals):
    term = watch(terminals, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    workflow = Workflow(celery_ws_settings, user).start()
    term.expect("waiting for your answer")
    asyncio.run(cancel_elsewhere(celery_ws_server.url, workflow.id, user))
    assert term.wait() == 2, term.screen
    workflow.join()
    assert workflow.cancelled  # the question closed, no continuation
    assert "cancelled" in term.screen


async def cancel_elsewhere(url: str, task_id: str, user: str) -> None:
    """The owner cancels from another tab."""
    async with Client(url, timeout=seconds(10)) as client:
        await client.subscribe(user_id=user)
        assert (await client.cancel(task_id))["type"] == "cancel_received"
