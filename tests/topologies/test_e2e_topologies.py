"""The main paths end to end, once on a standalone Redis and once on a
three-master Redis Cluster: a real prefork worker (``celery worker -P
prefork``) and two ``celery-ws serve`` replicas in token mode, both started
with the Celery app (either may send a continuation), a person's clients on
either replica.

The Celery broker and result backend stay on the suite's standalone Redis
(kombu has no cluster transport); celery-ws' own Redis is the topology under
test. Owners are many and random, so on the cluster their homes fall on
different masters.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_ws import Settings, final_result, issue_token
from celery_ws.client import Client
from celery_ws.protocol import event_order
from celery_ws.testing.redis_topologies import RedisClusterNodes
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess, WorkerProcess

SECRET = "topology-test-secret-of-at-least-32-bytes"


@dataclass
class Stack:
    """Two replicas and a worker on one topology."""

    name: str
    redis_url: str
    a: ServeProcess
    b: ServeProcess
    queue: str
    settings: Settings
    env: dict[str, str]

    @asynccontextmanager
    async def client(self, user: str, replica: str = "a", **options: Any) -> AsyncIterator[Client]:
        server = self.a if replica == "a" else self.b
        token = issue_token(user, settings=self.settings)
        async with Client(server.url, token=token, timeout=seconds(15), **options) as client:
            yield client


def _env(celery_ws_redis_url: str, prefix: str) -> dict[str, str]:
    """celery-ws' settings, and the Celery result backend, of every process."""
    return {
        "CELERY_WS_SECRET": SECRET,
        "CELERY_WS_KEY_PREFIX": prefix,
        "CELERY_RESULT_BACKEND": celery_ws_redis_url,
    }


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def stack(
    request: pytest.FixtureRequest,
    app: Celery,
    celery_ws_redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    if request.param == "cluster":
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        redis_url = cluster.url
    else:
        redis_url = celery_ws_redis_url
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = _env(celery_ws_redis_url, prefix)
    logs: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    queue = f"{request.param}-{prefix}"
    worker = WorkerProcess(app, redis_url, logs, queue, broker_url=celery_ws_redis_url, env=env)
    with_broker = {
        **env,
        "CELERY_BROKER_URL": celery_ws_redis_url,
    }  # the app a server sends continuations with
    replicas = [ServeProcess(redis_url, logs, env=with_broker, app="tests.prefork_app:app") for _ in range(2)]
    worker.start()
    try:
        for replica in replicas:
            replica.start()
        settings = Settings.load(redis_url=redis_url, secret=SECRET, key_prefix=prefix)
        yield Stack(request.param, redis_url, *replicas, queue, settings, env)
    finally:
        for replica in replicas:
            replica.stop()
        worker.stop()
        print(f"worker log:\n{worker.logs()}")  # shown when a test fails


def _ids(client: Client, task_id: str) -> list[str]:
    return [f["id"] for f in client.frames if f.get("task_id") == task_id and "id" in f]


async def test_progress_step_results_and_a_late_viewer(stack: Stack, user: str) -> None:
    async with stack.client(user) as client:
        await client.subscribe(user_id=user)
        result = tasks.report.apply_async_for(user, (5,), {"step": "validation"}, queue=stack.queue)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    kinds = [f["type"] for f in client.frames if f.get("task_id") == result.id]
    assert kinds[0] == "task_started" and "task_progress" in kinds and "task_step_result" in kinds
    got = _ids(client, result.id)
    assert got == sorted(set(got), key=event_order), "each event once, in order"
    # a page opened afterwards, on the other replica, gets the task's state
    async with stack.client(user, "b") as late:
        confirmed = await late.subscribe(task_id=result.id)
    assert confirmed["type"] == "subscription_confirmed", confirmed
    assert confirmed["state"]["final"]["type"] == "task_succeeded"
    assert confirmed["state"]["final"]["result"] == done["result"]


async def test_a_question_asked_through_one_replica_is_answered_through_the_other(
    stack: Stack, user: str
) -> None:
    async with stack.client(user, "a") as watching, stack.client(user, "b") as answering:
        await watching.subscribe(user_id=user)
        await answering.subscribe(user_id=user)
        result = tasks.ask.apply_async_for(user, (), {"timeout": seconds(30)}, queue=stack.queue)
        asked = await watching.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))
        reply = await answering.confirm(asked["callback_id"], True, "looks right")
        assert reply["type"] == "confirmation_received"
        done = await watching.wait_for_event("task_succeeded", task_id=result.id)
    assert (done["result"]["proceed"], done["result"]["feedback"]) == (True, "looks right")
    assert stack.settings.keys.callback_home(asked["callback_id"]) == stack.settings.keys.home(user)


async def test_typed_answer_from_an_assignee(stack: Stack, user: str) -> None:
    reviewer = f"reviewer-{uuid.uuid4().hex[:8]}"  # another home than the owner's, mostly
    async with stack.client(user) as owner, stack.client(reviewer, "b") as other:
        await owner.subscribe(user_id=user)
        await other.subscribe(user_id=reviewer)
        result = tasks.ask_later.apply_async_for(
            user,
            (),
            {"tag": "typed", "assignees": [user, reviewer], "typed": True, "queue": stack.queue},
            queue=stack.queue,
        )
        asked = await other.wait_for(lambda f: f.get("callback_id") and f.get("answer_schema"))
        refused = await other.confirm(asked["callback_id"], True, data={"rows": "many"})
        assert refused["code"] == "invalid_answer"
        await other.confirm(asked["callback_id"], True, None, data={"rows": 7})
        final = await owner.wait_for_workflow(result.id)
    got = final["result"]
    assert (got["data_type"], got["data"], got["answered_by"]) == (
        "RowLimit",
        {"rows": 7, "note": ""},
        reviewer,
    )
    assert got["owner"] == user and got["runs"] == 1
    assert final_result(result, timeout=seconds(20)) == got


async def test_cancel_through_the_other_replica(stack: Stack, user: str) -> None:
    async with stack.client(user, "a") as watching, stack.client(user, "b") as cancelling:
        await watching.subscribe(user_id=user)
        result = tasks.spin.apply_async_for(user, (0.05,), queue=stack.queue)
        await watching.wait_for_event("task_progress", task_id=result.id)
        assert (await cancelling.cancel(result.id))["type"] == "cancel_received"
        await watching.wait_for_event("task_cancelled", task_id=result.id)


async def test_resume_after_a_disconnect_misses_nothing(stack: Stack, user: str) -> None:
    async with stack.client(user) as first:
        await first.subscribe(user_id=user)
        result = tasks.step_by_step.apply_async_for(user, (12, 0.1), queue=stack.queue)
        await first.wait_for_event("task_step_result", task_id=result.id)
        last = first.last_event_id
        before = _ids(first, result.id)
    await asyncio.sleep(0.4)  # events stored while nobody is connected
    async with stack.client(user, "b") as again:
        await again.subscribe(user_id=user, last_event_id=last)
        await again.wait_for_event("task_succeeded", task_id=result.id)
    after = _ids(again, result.id)
    assert not set(before) & set(after), "nothing twice"
    assert after == sorted(after, key=event_order)
    stored = stack_history(stack, user, result.id)
    assert before + after == stored, "every stored event, once"


async def test_a_killed_worker_is_reported_lost(
    stack: Stack, user: str, app: Celery, celery_ws_redis_url: str, tmp_path: Path
) -> None:
    env = {**stack.env, "CELERY_WS_HEARTBEAT_INTERVAL": "0.5"}
    queue = f"lost-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(app, stack.redis_url, tmp_path, queue, broker_url=celery_ws_redis_url, env=env)
    worker.start()
    try:
        async with stack.client(user) as client:
            await client.subscribe(user_id=user)
            result = tasks.spin.apply_async_for(user, (0.05,), queue=queue)
            await client.wait_for_event("task_progress", task_id=result.id)
            worker.kill()  # the whole worker, pool and all: nobody says the task ended
            lost = await client.wait_for_event("task_failed", task_id=result.id, timeout=seconds(20))
    finally:
        worker.stop()
    assert lost["error_code"] == "WorkerLost"


def stack_history(stack: Stack, owner: str, task_id: str) -> list[str]:
    from celery_ws.connections import sync_client

    client = sync_client(stack.redis_url)
    try:
        entries = client.xrange(stack.settings.keys.home(owner).task_events(task_id))
        return [entry_id.decode() for entry_id, fields in entries if fields[b"y"] != b"heartbeat"]
    finally:
        client.close()
