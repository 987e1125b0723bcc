"""The pytest plugin as a user's suite meets it: their own app and task, an
embedded worker for it, a token-mode server, and a client logged in as a user.

The suite runs in its own pytest process (pytester), as a user's would: one
process may host only one embedded Celery worker at a time.
"""

from __future__ import annotations

import pytest

from tests.helpers import seconds

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
from celery import Celery

from celery_ws import ProgressTask, Settings, TaskStepResult, confirm_step
from celery_ws.testing import ServerThread


@pytest.fixture(scope="session")
def celery_ws_app(celery_ws_redis_url):
    app = Celery("users_app", broker=celery_ws_redis_url, backend=celery_ws_redis_url, set_as_current=False)
    app.conf.task_default_queue = "users-app"

    @app.task(base=ProgressTask, bind=True, name="users_app.review")
    def review(self, rows):
        for i in range(rows):
            self.progress(i + 1, rows)
        question = TaskStepResult(step="review", message=f"Write {rows} rows?", status="waiting")
        return confirm_step(question, timeout=20).model_dump()

    return app


@pytest.fixture(scope="session")
def celery_ws_server(celery_ws_redis_url):
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, secret="users-secret-0123456789abcdef-xyz"))
    yield server.start()
    server.stop()
"""

TEST = """
async def test_review_asks_before_writing(celery_ws_app, celery_ws_worker, celery_ws_client):
    review = celery_ws_app.tasks["users_app.review"]
    async with celery_ws_client(user_id="alice") as client:
        result = review.delay_for("alice", 3)
        question = await client.wait_for(lambda f: f.get("callback_id") and f["task_id"] == result.id)
        await client.confirm(question["callback_id"], True, "from the plugin")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert client.frames[0]["type"] == "authenticated" and client.frames[0]["user_id"] == "alice"
    assert done["result"]["feedback"] == "from the plugin" and done["result"]["answered_by"] == "alice"
"""


def test_a_users_suite_drives_a_task_through_its_question(
    pytester: pytest.Pytester, celery_ws_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_WS_TEST_REDIS_URL", celery_ws_redis_url)
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_users_suite=TEST)
    outcome = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=seconds(120))
    outcome.assert_outcomes(passed=1)
