"""A real ``celery worker`` subprocess on the prefork pool (concurrency 2):
events from forked children, confirmations and cancellation across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery.states import REVOKED

from tests import tasks
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def prefork_queue(app, celery_ws_redis_url, tmp_path_factory) -> Iterator[str]:
    queue = f"prefork-{uuid.uuid4().hex[:8]}"
    name = f"{queue}@localhost"
    log = tmp_path_factory.mktemp("prefork") / "worker.log"
    env = {**os.environ, "CELERY_WS_REDIS_URL": celery_ws_redis_url, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.prefork_app", "worker", "-P", "prefork",
             "-c", "2", "-Q", queue, "-n", name, "--without-mingle", "--without-gossip", "-l", "info"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not app.control.ping(destination=[name], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefork worker did not start:\n{log.read_text()[-3000:]}")
        yield queue
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def test_two_tasks_in_two_children_report_and_confirm(celery_ws_client, user, prefork_queue):
    async with celery_ws_client(user_id=user) as client:
        asking = tasks.ask.apply_async_for(user, (), {"timeout": 20}, queue=prefork_queue)
        working = tasks.report.apply_async_for(user, (200,), {"step": "count"}, queue=prefork_queue)
        request = await client.wait_for(
            lambda f: f.get("task_id") == asking.id and f.get("callback_id") is not None)
        await client.wait_for_event("task_succeeded", task_id=working.id)
        await client.confirm(request["callback_id"], True, "from the test")
        done = await client.wait_for_event("task_succeeded", task_id=asking.id)
    assert done["result"]["feedback"] == "from the test"
    worked = [f["type"] for f in client.frames if f.get("task_id") == working.id]
    assert worked[:2] == ["task_sent", "task_started"] and worked[-1] == "task_succeeded"
    assert "task_progress" in worked and "task_step_result" in worked


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
