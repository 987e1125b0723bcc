"""The README's code is real: each snippet is an excerpt of a file that these
tests (or ``make demo``) run."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from celery_ws.testing.redis_server import free_port
from examples import embedded_server, publish, watch
from tests import tasks
from tests.helpers import seconds

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r"<!-- example: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)


def test_every_python_snippet_is_an_excerpt_of_a_tested_file():
    readme = (ROOT / "README.md").read_text()
    snippets = list(SNIPPET.finditer(readme))
    assert len(snippets) == readme.count("```python")
    for snippet in snippets:
        source = _unindented((ROOT / snippet["path"]).read_text())
        assert _unindented(snippet["code"]) in source, f"README snippet drifted from {snippet['path']}"


def _unindented(code: str) -> str:
    return "\n".join(line.strip() for line in code.splitlines()) + "\n"


@pytest.mark.usefixtures("worker")
async def test_starting_tasks_for_a_user(celery_ws_client):
    import_rows = tasks.import_rows
    async with celery_ws_client(user_id="user_123") as client:
        import_rows.delay_for("user_123", "orders.csv")
        import_rows.apply_async_for("user_123", ("orders.csv",), countdown=1)
        import_rows.apply_async(("orders.csv",), headers={"celery_ws_user": "user_123"})  # any task, any API
        await client.wait_for(lambda _: sum(f["type"] == "task_succeeded" for f in client.frames) == 3)


async def test_publish_example(celery_ws_client, monkeypatch, celery_ws_redis_url):
    monkeypatch.setenv("CELERY_WS_REDIS_URL", celery_ws_redis_url)
    async with celery_ws_client(user_id="user_123") as client:
        running = asyncio.create_task(asyncio.to_thread(publish.main, "readme-task"))
        request = await client.wait_for(lambda f: f.get("callback_id") is not None)
        await client.confirm(request["callback_id"], True)
        answer = await running
    assert answer.proceed is True
    types = [f["type"] for f in client.frames]
    assert {"system_notification", "personal_notification", "task_step_result"} <= set(types)


async def test_embedded_server_example(monkeypatch, celery_ws_redis_url):
    from celery_ws.client import Client

    monkeypatch.setenv("CELERY_WS_REDIS_URL", celery_ws_redis_url)
    port = free_port()
    running = asyncio.create_task(embedded_server.main(port=port, answer_timeout=seconds(10)))
    async with asyncio.timeout(seconds(10)):
        while True:
            try:
                client = await Client(f"ws://127.0.0.1:{port}", timeout=seconds(10)).__aenter__()
                break
            except OSError:
                await asyncio.sleep(0.05)
    await client.subscribe(user_id="user_123")
    request = await client.wait_for(lambda f: f.get("callback_id") is not None)
    # the example stops its server as soon as it has the answer: don't wait for the reply
    await client.send(
        {"action": "confirm", "callback_id": request["callback_id"], "proceed": False, "feedback": "no"}
    )
    confirmation = await running
    await client.close()
    assert confirmation.proceed is False
    assert confirmation.feedback == "no"


@pytest.mark.usefixtures("worker")
async def test_watch_example_approves_and_ends(celery_ws_server, user):
    watching = asyncio.create_task(watch.watch(celery_ws_server.url, user))
    await asyncio.sleep(0.2)  # let it subscribe; a missed request would be re-sent anyway
    result = tasks.ask.delay_for(user)
    assert await asyncio.wait_for(watching, seconds(20)) == "task_succeeded"
    assert (await asyncio.to_thread(result.get, timeout=seconds(5)))["feedback"] == "ok"


def test_make_demo_runs_end_to_end(celery_ws_redis_url, tmp_path):
    """What ``make demo`` runs: a server and a prefork worker subprocess, and a
    client that watches the task, answers its question and sees it succeed."""
    env = {**os.environ, "CELERY_WS_REDIS_URL": celery_ws_redis_url, "CELERY_BROKER_URL": celery_ws_redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(120),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "task_succeeded" in done.stdout or "succeeded" in done.stdout.lower()


report_and_ask = tasks.report_and_ask


async def test_the_task_asks_before_writing(celery_ws_client, worker):
    async with celery_ws_client(user_id="u1") as client:
        result = report_and_ask.delay_for("u1")
        question = await client.wait_for(lambda f: f.get("callback_id") and f["task_id"] == result.id)
        await client.confirm(question["callback_id"], True)
        await client.wait_for_event("task_succeeded", task_id=result.id)
