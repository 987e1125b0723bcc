"""The pytest plugin as a user's suite meets it: their own app, an embedded
worker for it, a token-mode server, and a client logged in as a user."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from celery_ws import Settings
from celery_ws.testing import ServerThread

SECRET = "plugin-test-secret-0123456789abcdefghij"


@pytest.fixture(scope="session")
def celery_ws_app(celery_ws_redis_url: str) -> Celery:
    app = Celery("users_app", broker=celery_ws_redis_url, backend=celery_ws_redis_url, include=["tests.tasks"],
                 set_as_current=False)
    app.conf.update(task_default_queue=f"users-app-{uuid.uuid4().hex[:8]}", broker_connection_retry_on_startup=True)
    app.loader.import_default_modules()
    return app


@pytest.fixture(scope="module")
def celery_ws_server(celery_ws_redis_url: str) -> Iterator[ServerThread]:
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)).start()
    yield server
    server.stop()


async def test_a_users_suite_drives_a_task_through_its_question(celery_ws_app, celery_ws_worker, celery_ws_client,
                                                                user):
    report_and_ask = celery_ws_app.tasks["tests.tasks.report_and_ask"]
    async with celery_ws_client(user_id=user) as client:
        result = report_and_ask.delay_for(user, 3)
        question = await client.wait_for(lambda f: f.get("callback_id") and f["task_id"] == result.id)
        await client.confirm(question["callback_id"], True, "from the plugin")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert client.frames[0]["type"] == "authenticated" and client.frames[0]["user_id"] == user
    assert done["result"]["feedback"] == "from the plugin"
