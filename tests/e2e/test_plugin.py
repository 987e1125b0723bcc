"""The pytest plugin as a user's suite meets it: their own app and task, an
embedded worker for it, a server on the app's own settings, a client logged
in as a user, answers from test code, and a test that fails while its task
waits on a question.

Each suite runs in its own pytest process (pytester), as a user's would: one
process may host only one embedded Celery worker at a time. Every inner run is
bounded in time: a suite that hangs fails here instead of hanging this one.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import seconds

pytest_plugins = ["pytester"]

#: each test runs a whole inner suite (its own interpreter, worker and server)
pytestmark = pytest.mark.timeout(150)

#: the user's app: a task that asks before writing, and one with a typed question
USERS_APP = """
import uuid

from celery import Celery
from pydantic import BaseModel, Field

from celery_ws import ProgressTask, TaskStepResult, confirm_step


class Rows(BaseModel):
    rows: int = Field(ge=1)
    note: str = ""


def make_app(redis_url, **conf):
    # shared=False: a function-scoped app is made anew for each test, and
    # Celery would register a shared task of one app in the apps made after it
    app = Celery("users_app", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_default_queue=f"users-app-{uuid.uuid4().hex}", **conf)

    @app.task(base=ProgressTask, bind=True, name="users_app.review", shared=False)
    def review(self, rows, timeout=20):
        for i in range(rows):
            self.progress(i + 1, rows)
        question = TaskStepResult(step="review", message=f"Write {rows} rows?", status="waiting")
        return confirm_step(question, timeout=timeout).model_dump()

    @app.task(base=ProgressTask, bind=True, name="users_app.limit", shared=False)
    def limit(self):
        question = TaskStepResult(step="limit", message="How many rows?", status="waiting")
        answer = confirm_step(question, timeout=20, answer_model=Rows)
        return answer.data.model_dump() if answer.proceed else None

    return app
"""

SECRET = "users-secret-0123456789abcdef-xyz"


def run(
    pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch, conftest: str, **tests: str
):
    monkeypatch.setenv("CELERY_WS_TEST_REDIS_URL", redis_url)
    pytester.makepyfile(users_app=USERS_APP)
    pytester.makeconftest(conftest)
    pytester.makepyfile(**tests)
    return pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "--timeout", "60", timeout=seconds(120)
    )


TOKEN_SERVER_CONFTEST = f"""
import pytest

from celery_ws import Settings
from celery_ws.testing import ServerThread
from users_app import make_app


@pytest.fixture(scope="session")
def celery_ws_app(celery_ws_redis_url):
    return make_app(celery_ws_redis_url)


@pytest.fixture(scope="session")
def celery_ws_server(celery_ws_redis_url):
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, secret="{SECRET}"))
    yield server.start()
    server.stop()
"""

TOKEN_SERVER_TEST = """
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
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    outcome = run(
        pytester, celery_ws_redis_url, monkeypatch, TOKEN_SERVER_CONFTEST, test_users_suite=TOKEN_SERVER_TEST
    )
    outcome.assert_outcomes(passed=1)


#: an app configured for token mode and its own key prefix in app.conf, as a
#: Django project's settings would; its fixture's decorator is filled in
APP_CONFIG_CONFTEST = f"""
import pytest

from users_app import make_app


@pytest.fixture{{scope}}
def celery_ws_app(celery_ws_redis_url):
    return make_app(celery_ws_redis_url, ws_secret="{SECRET}", ws_key_prefix="usersapp")
"""

APP_CONFIG_TEST = """
import pytest


@pytest.mark.asyncio
@pytest.mark.parametrize("rows", [2, 3])
async def test_the_server_and_worker_use_the_apps_settings(
    rows, celery_ws_app, celery_ws_settings, celery_ws_server, celery_ws_worker, celery_ws_client
):
    assert celery_ws_settings.key_prefix == "usersapp" and celery_ws_settings.token_mode
    served = celery_ws_server.manager.settings
    assert (served.key_prefix, served.token_mode, served.redis_url) == (
        "usersapp", True, celery_ws_settings.redis_url
    )
    review = celery_ws_app.tasks["users_app.review"]
    async with celery_ws_client(user_id="alice") as client:  # a token: the server is in token mode
        result = review.delay_for("alice", rows)
        question = await client.wait_for(lambda f: f.get("callback_id") and f["task_id"] == result.id)
        await client.confirm(question["callback_id"], True, f"{rows} rows")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert client.frames[0]["type"] == "authenticated"
    assert done["result"]["feedback"] == f"{rows} rows"
"""


@pytest.mark.parametrize("scope", [None, "module", "session"])
def test_an_app_overridden_at_any_scope_gives_its_settings_to_server_and_worker(
    scope: str | None, pytester: pytest.Pytester, celery_ws_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the app fixture's scope, the plugin's default settings are the
    app's (an app outliving the test once got the environment's: open mode,
    another key prefix than its worker's). Strict asyncio mode (no ini): the
    async test carries its mark."""
    conftest = APP_CONFIG_CONFTEST.replace("{scope}", f'(scope="{scope}")' if scope else "")
    outcome = run(pytester, celery_ws_redis_url, monkeypatch, conftest, test_app_config=APP_CONFIG_TEST)
    outcome.assert_outcomes(passed=2)


SESSION_APP_CONFTEST = """
import pytest

from users_app import make_app


@pytest.fixture(scope="session")
def celery_ws_app(celery_ws_redis_url):
    return make_app(celery_ws_redis_url)
"""

#: the first test fails while its task waits on a question that would wait
#: 300 s; the second finds the worker free and the first task cancelled
FAILING_TEST = """
import time

import redis

STARTED = []


def test_fails_while_its_task_waits(celery_ws_app, celery_ws_worker, celery_ws_settings):
    result = celery_ws_app.tasks["users_app.review"].delay_for("alice", 2, timeout=300)
    STARTED.append(result)
    client = redis.Redis.from_url(celery_ws_settings.redis_url)
    deadline = time.monotonic() + 20
    while not client.zcard(celery_ws_settings.keys.home("alice").task_pending(result.id)):
        assert time.monotonic() < deadline, "the task never asked"
        time.sleep(0.05)
    assert "answered" == "by nobody", "a test that fails while its task waits on a question"


def test_the_next_test_finds_the_worker_free(celery_ws_app, celery_ws_worker, celery_ws_answer):
    first = STARTED[0]  # cancelled: stored FAILURE, then REVOKED a moment later
    deadline = time.monotonic() + 10
    while first.backend.get_task_meta(first.id, cache=False)["status"] != "REVOKED":
        assert time.monotonic() < deadline, first.backend.get_task_meta(first.id, cache=False)
        time.sleep(0.05)
    result = celery_ws_app.tasks["users_app.review"].delay_for("alice", 1)
    celery_ws_answer(result.id, True, feedback="ok")
    assert result.get(timeout=20)["feedback"] == "ok"
"""


def test_a_test_that_fails_while_its_task_waits_does_not_hang_the_suite(
    pytester: pytest.Pytester, celery_ws_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    outcome = run(pytester, celery_ws_redis_url, monkeypatch, SESSION_APP_CONFTEST, test_failing=FAILING_TEST)
    outcome.assert_outcomes(passed=1, failed=1)
    assert "by nobody" in outcome.stdout.str()  # it failed where meant to, while the task waited
    assert time.monotonic() - started < seconds(60), outcome.stdout.str()  # not the question's 300 s


#: synchronous tests, run without pytest-asyncio: answers from test code
ANSWER_TEST = """
import pytest

from celery_ws import ProtocolError


def test_answer_a_typed_question(celery_ws_app, celery_ws_worker, celery_ws_answer):
    result = celery_ws_app.tasks["users_app.limit"].delay_for("bob")
    with pytest.raises(ProtocolError) as refused:
        celery_ws_answer(result.id, data={"rows": 0})
    assert refused.value.code == "invalid_answer" and refused.value.details["fields"] == ["rows"]
    answered = celery_ws_answer(result.id, data={"rows": 4, "note": "four"})
    assert answered.answered_by == "bob"
    assert result.get(timeout=20) == {"rows": 4, "note": "four"}


def test_auto_answer_every_question(celery_ws_app, celery_ws_worker, celery_ws_auto_answer):
    review = celery_ws_app.tasks["users_app.review"]
    with celery_ws_auto_answer(False, feedback="auto") as answering:
        results = [review.delay_for("bob", 1) for _ in range(3)]
        outcomes = [result.get(timeout=20) for result in results]
    assert [(o["proceed"], o["feedback"]) for o in outcomes] == [(False, "auto")] * 3
    assert len(answering.answers) == 3
"""


def test_answers_from_sync_tests_without_pytest_asyncio(
    pytester: pytest.Pytester, celery_ws_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\naddopts = -p no:asyncio\n")
    outcome = run(pytester, celery_ws_redis_url, monkeypatch, SESSION_APP_CONFTEST, test_answers=ANSWER_TEST)
    outcome.assert_outcomes(passed=2)
