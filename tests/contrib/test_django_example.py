"""examples/django_app as a person uses it, in a real headless Chromium:
``python -m examples.django_app`` (the documented command: celery-ws serve
through ``celery -A``, a prefork worker, Django's runserver) on the suite's
Redis; sign in, start an import, watch its progress, answer its typed
question (first with a value the answer model refuses), see it finish; or
cancel it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.states import REVOKED

from celery_ws import Settings
from celery_ws.testing.redis_server import free_port
from celery_ws.tokens import TokenVerifier
from tests.e2e.browser import conftest as browser_fixtures
from tests.helpers import seconds
from tests.processes import REPO, _clean_env, run

EXAMPLE_SECRET = "django-example-secret-change-me-0123456789"  # examples/django_app/settings.py

pytestmark = pytest.mark.timeout(180)

browser = browser_fixtures.browser
page = browser_fixtures.page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None


@pytest.fixture
def example(celery_ws_redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The running example's address, once it says it is ready."""
    port, ws_port = free_port(), free_port()
    log = tmp_path / "example.log"
    env = _clean_env(
        CELERY_WS_REDIS_URL=celery_ws_redis_url,
        CELERY_BROKER_URL=celery_ws_redis_url,
        CELERY_WS_KEY_PREFIX=f"dj{os.urandom(3).hex()}",  # its user "1" meets no other test's
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.django_app", "--port", str(port), "--ws-port", str(ws_port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + seconds(60)
        while "Ready." not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the example did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)  # it stops its server, worker and Django
        try:
            process.wait(seconds(30))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        print(log.read_text())


def _sign_in(page: Any, example: str) -> None:
    page.goto(example + "/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo")
    page.click("button[type=submit]")
    expect(page.locator("#user")).to_have_text("demo")
    expect(page.locator("#state")).to_have_text("open")  # connected with a token from ws/token/


def test_sign_in_start_an_import_follow_it_answer_its_question(example: str, page: Any) -> None:
    _sign_in(page, example)

    page.click("#start")
    page.wait_for_function(
        "() => { const v = document.getElementById('bar').value; return v > 0 && v < 100; }"
    )
    expect(page.locator("#message")).to_contain_text("Reading orders.csv")

    question = page.locator("#question")
    expect(question).to_be_visible()
    expect(page.locator("#question-text")).to_have_text("Write the rows of orders.csv?")
    expect(question.locator("[name=skip_invalid]")).to_be_checked()  # the model's default
    page.fill("[name=batch_size]", "5000")  # WriteOptions.batch_size: at most 1000
    page.click("#proceed")
    expect(question.locator('[data-field="batch_size"]')).to_have_class(re.compile(r"\bcws-invalid\b"))
    expect(question).to_be_visible()  # still open: the task keeps waiting
    browser_fixtures.screenshot(page, "django-example-refused-answer")

    page.fill("[name=batch_size]", "9")
    page.fill("#feedback", "ship it")
    page.click("#proceed")
    expect(question).to_be_hidden()
    expect(page.locator("#outcome")).to_have_text(
        re.compile(r'^Done: \{"written":36,"batch_size":9,"answered_by":"\d+"\}$'), timeout=seconds(30) * 1000
    )
    browser_fixtures.screenshot(page, "django-example-done")


def test_cancel_stops_the_import(example: str, page: Any, celery_ws_redis_url: str) -> None:
    """The page's Cancel reaches the worker through celery-ws alone (the
    owner's right to cancel, checked by the server), and Celery's own record
    of the task agrees with what the page shows."""
    _sign_in(page, example)
    page.click("#start")
    expect(page.locator("#log")).to_contain_text("started ")
    started = re.search(r"started (\S+)", page.locator("#log").inner_text())
    assert started is not None
    task_id = started.group(1)
    page.wait_for_function("() => document.getElementById('bar').value > 0")  # running, not still queued
    expect(page.locator("#cancel")).to_be_enabled()

    page.click("#cancel")
    expect(page.locator("#outcome")).to_have_text("Cancelled", timeout=seconds(30) * 1000)
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#question")).to_be_hidden()
    browser_fixtures.screenshot(page, "django-example-cancelled")

    results = Celery(backend=celery_ws_redis_url)  # the example's CELERY_RESULT_BACKEND
    try:
        result = results.AsyncResult(task_id)
        deadline = time.monotonic() + seconds(10)
        while result.state != REVOKED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert result.state == REVOKED
    finally:
        results.close()


def test_celery_ws_token_reads_the_django_projects_settings() -> None:
    """``celery -A proj ws token``: the secret is in settings.py, not the environment."""
    done = run([sys.executable, "-m", "celery", "-A", "examples.django_app", "ws", "token", "1"])
    assert done.returncode == 0, done.stderr
    identity = TokenVerifier(Settings.load(secret=EXAMPLE_SECRET)).verify(done.stdout.strip())
    assert identity.user_id == "1"
    assert identity.expires_at <= time.time() + 300  # CELERY_WS_TOKEN_TTL in settings.py
