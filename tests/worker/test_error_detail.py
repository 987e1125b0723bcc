"""``error_detail``: what a task's owner is told of its exceptions, whose text
can carry internals (SQL, paths, other users' data). Each setting on a real
worker: the suite's own runs the default ("message"), and a ``celery worker``
subprocess is started with ``CELERY_WS_ERROR_DETAIL=class``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_ws import Settings, SettingsError
from celery_ws.client import Frame
from tests import tasks
from tests.processes import WorkerProcess

SECRET = 'duplicate key value violates "users_pkey" (email)=(ceo@example.com) in /srv/app/db.py'
#: what a client shows where the text was, with error_detail="class"
WITHHELD = "details are in the worker's log"


@pytest.fixture(scope="module")
def class_only_queue(app: Any, celery_ws_redis_url: str, tmp_path_factory: Any) -> Iterator[str]:
    worker = WorkerProcess(
        app,
        celery_ws_redis_url,
        tmp_path_factory.mktemp("error-detail"),
        f"error-detail-{uuid.uuid4().hex[:8]}",
        concurrency=1,
        env={"CELERY_WS_ERROR_DETAIL": "class"},
    ).start()
    yield worker.queue
    worker.stop()


async def retry_then_failure(
    celery_ws_client: Callable[..., Any], user: str, **options: Any
) -> tuple[Frame, Frame, list[Frame]]:
    """``task_retrying`` and ``task_failed`` of a task that raises ``SECRET``, as
    its owner receives them, and every frame of that task."""
    async with celery_ws_client(user_id=user) as client:
        result = tasks.fail_saying.apply_async_for(user, (SECRET,), **options)
        retrying = await client.wait_for_event("task_retrying", task_id=result.id)
        failed = await client.wait_for_event("task_failed", task_id=result.id)
    return retrying, failed, [f for f in client.frames if f.get("task_id") == result.id]


@pytest.mark.usefixtures("worker")
async def test_by_default_the_owner_reads_the_exception_text(celery_ws_client, user):
    retrying, failed, _ = await retry_then_failure(celery_ws_client, user)
    assert retrying["reason"] == f"RuntimeError: {SECRET}"
    assert (failed["error_code"], failed["error_message"]) == ("ValueError", SECRET)


async def test_class_only_tells_the_owner_the_class_and_no_text(celery_ws_client, user, class_only_queue):
    retrying, failed, frames = await retry_then_failure(celery_ws_client, user, queue=class_only_queue)
    assert retrying["reason"] == f"RuntimeError: {WITHHELD}"
    assert (failed["error_code"], failed["error_message"]) == ("ValueError", WITHHELD)
    assert "ceo@example.com" not in json.dumps(frames)  # in no field of any event of the task


def test_app_conf_key_and_a_bad_value_named():
    assert Settings.load({"ws_error_detail": "class"}).error_detail == "class"
    with pytest.raises(SettingsError, match="CELERY_WS_ERROR_DETAIL / ws_error_detail"):
        Settings.load(error_detail="traceback")
