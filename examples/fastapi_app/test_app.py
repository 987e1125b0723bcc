"""The FastAPI example with FastAPI's TestClient, against a real Redis and a real
celery-ws server: the token it mints is one the server accepts, and the start
endpoint enqueues ``examples.tasks.import_rows`` for the signed-in user.

    .venv/bin/python -m pytest examples/fastapi_app/test_app.py

The app runs in a subprocess: ``examples.tasks`` builds its Celery app from the
environment at import, which must name the test Redis, and should not be
imported into a test process that has its own Celery app.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="pip install fastapi httpx to run the FastAPI example's test")

from celery_ws import Settings
from celery_ws.tokens import TokenVerifier

ROOT = Path(__file__).resolve().parents[2]
SECRET = "fastapi-example-secret-0123456789abcdef"
RUN_TIMEOUT = 60

SCRIPT = """
import json
from fastapi.testclient import TestClient
from examples.fastapi_app.app import app

http = TestClient(app)
out = {"anonymous": http.get("/ws-token").status_code}
http.get("/login", params={"user": USER}, follow_redirects=False)
out["token"] = http.get("/ws-token").json()
out["started"] = http.post("/tasks", json={"rows": 3, "delay": 0}).json()
page = http.get("/")
out["page"] = {"status": page.status_code, "user": USER in page.text,
               "script": '<script src="https://ws.example.com/celery-ws.js">' in page.text}
print(json.dumps(out))
"""


async def test_token_is_accepted_and_the_import_is_enqueued(celery_ws_redis_url, celery_ws_client):
    user = "fastapi-" + os.urandom(4).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_WS_", "WEBSOCKET_"))}
    env.update(
        CELERY_WS_REDIS_URL=celery_ws_redis_url,
        CELERY_BROKER_URL=celery_ws_redis_url,
        CELERY_WS_SECRET=SECRET,
        CELERY_WS_PUBLIC_URL="https://ws.example.com/live/",
        PYTHONPATH=str(ROOT),
    )
    async with celery_ws_client(user_id=user) as watcher:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", f"USER = {user!r}\n" + SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        task_id = out["started"]["task_id"]
        sent = await watcher.wait_for_event("task_sent", task_id=task_id)
        cancelled = await watcher.cancel(task_id)  # no worker consumes the example's queue here
    assert out["anonymous"] == 401
    identity = TokenVerifier(Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)).verify(
        out["token"]["token"]
    )
    assert identity.user_id == user
    assert out["token"]["url"] == "wss://ws.example.com/live/"  # CELERY_WS_PUBLIC_URL, as a browser opens it
    assert out["token"]["expires_at"] == identity.expires_at
    assert sent["name"] == "examples.tasks.import_rows"
    assert sent["user_id"] == user
    assert cancelled["type"] == "cancel_received"
    assert out["page"] == {"status": 200, "script": True, "user": True}
