"""A real ``celery worker`` subprocess on the prefork pool (concurrency 2):
events from forked children, confirmations and cancellation across processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery.states import REVOKED

from tests import tasks
from tests.helpers import eventually
from tests.processes import WorkerProcess


@pytest.fixture(scope="module")
def prefork_queue(app, celery_ws_redis_url, tmp_path_factory) -> Iterator[str]:
    worker = WorkerProcess(
        app, celery_ws_redis_url, tmp_path_factory.mktemp("prefork"), f"prefork-{uuid.uuid4().hex[:8]}"
    ).start()
    yield worker.queue
    worker.stop()


async def test_two_tasks_in_two_children_report_and_confirm(celery_ws_client, user, prefork_queue):
    async with celery_ws_client(user_id=user) as client:
        asking = tasks.ask.apply_async_for(user, (), {"timeout": 20}, queue=prefork_queue)
        working = tasks.report.apply_async_for(user, (200,), {"step": "count"}, queue=prefork_queue)
        request = await client.wait_for(
            lambda f: f.get("task_id") == asking.id and f.get("callback_id") is not None
        )
        await client.wait_for_event("task_succeeded", task_id=working.id)
        await client.confirm(request["callback_id"], True, "from the test")
        done = await client.wait_for_event("task_succeeded", task_id=asking.id)
    assert done["result"]["feedback"] == "from the test"
    worked = [f["type"] for f in client.frames if f.get("task_id") == working.id]
    assert worked[:2] == ["task_sent", "task_started"]
    assert worked[-1] == "task_succeeded"
    assert "task_progress" in worked
    assert "task_step_result" in worked


async def test_cancel_reaches_a_task_running_in_a_child(celery_ws_client, user, prefork_queue):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.spin.apply_async_for(user, queue=prefork_queue)
        await client.wait_for_event("task_progress", task_id=result.id)
        await client.cancel(result.id)
        await client.wait_for_event("task_cancelled", task_id=result.id)
        # the child stops at its next progress() and takes new work again
        after = tasks.report.apply_async_for(user, (1,), queue=prefork_queue)
        await client.wait_for_event("task_succeeded", task_id=after.id)
        assert await eventually(lambda: result.state, REVOKED) == REVOKED
    assert not [f for f in client.frames if f.get("task_id") == result.id and f["type"] == "task_succeeded"]
