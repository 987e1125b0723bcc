"""The real parts the npm package's tests run against, started and stopped by
``stack.mjs``: a redis-server on a free port, ``celery-ws serve`` in token mode
(allowing pages from ``https://app.example`` only), and a Celery worker with a
task that reports progress and asks a typed question.

It speaks JSON lines. Once everything is up it prints
``{"url", "http_url"}``; then it answers one line per request:

- ``{"op": "token", "user": "u", "ttl": 60}`` -> ``{"token": "..."}``
- ``{"op": "start", "user": "u", "steps": 5}`` -> ``{"task_id": "..."}``
- ``{"op": "result", "task_id": "..."}`` -> ``{"result": ...}`` (the task's return value)
- ``{"op": "logs"}`` -> ``{"logs": "..."}`` (the end of the server's log)

and stops everything when its standard input closes. Run it with the
repository's virtualenv (``.venv/bin/python clients/js/test/stack.py``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from celery import Celery
from celery.contrib.testing.worker import start_worker
from pydantic import BaseModel, Field

from celery_ws import CeleryWS, ProgressTask, Settings, TaskStepResult, issue_token
from celery_ws.testing import RedisServer
from tests.processes import ServeProcess

SECRET = "npm-package-tests-secret-0123456789abcdefghij"  # noqa: S105  (a test server's)
ALLOWED_ORIGIN = "https://app.example"
TIMEOUT = 60.0


class Plan(BaseModel):
    """The typed answer the task asks for."""

    rows: int = Field(ge=1, le=100)
    mode: Literal["fast", "safe"] = "safe"


def make_app(redis_url: str) -> Celery:
    app = Celery("celery_ws_js_tests", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=f"celery-ws-js-{uuid.uuid4().hex[:8]}", worker_hijack_root_logger=False
    )
    CeleryWS(app, redis_url=redis_url)

    @app.task(base=ProgressTask, bind=True, name="celery_ws_js_tests.count_then_ask")
    def count_then_ask(self: ProgressTask, steps: int = 5) -> dict[str, Any]:
        for i in range(steps):
            self.progress(i + 1, steps, message=f"Counted {i + 1} of {steps}")
            time.sleep(0.05)
        answer = self.confirm(
            TaskStepResult(step="plan", message="How many rows?", status="waiting"),
            timeout=TIMEOUT,
            answer_model=Plan,
        )
        data = answer.data.model_dump() if answer.proceed else None
        return {"proceed": answer.proceed, "data": data, "answered_by": answer.answered_by}

    return app


def serve(app: Celery, server: ServeProcess) -> None:
    settings = Settings.load(secret=SECRET)
    task = app.tasks["celery_ws_js_tests.count_then_ask"]
    say({"url": server.url + "/", "http_url": server.http_url})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "token":
                reply: dict[str, Any] = {
                    "token": issue_token(request["user"], ttl=request.get("ttl", 60), settings=settings)
                }
            elif request["op"] == "start":
                reply = {"task_id": task.delay_for(request["user"], steps=request.get("steps", 5)).id}
            elif request["op"] == "logs":
                reply = {"logs": server.logs()}
            elif request["op"] == "result":
                reply = {"result": app.AsyncResult(request["task_id"]).get(timeout=TIMEOUT)}
            else:
                reply = {"error": f"unknown op {request['op']!r}"}
        except Exception as exc:  # reported to the test, which fails with it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        say(reply)


def say(reply: dict[str, Any]) -> None:
    print(json.dumps(reply), flush=True)


def main() -> None:
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="celery-ws-js-") as logs:
        app = make_app(redis.url)
        server = ServeProcess(
            redis.url,
            Path(logs),
            env={"CELERY_WS_SECRET": SECRET, "CELERY_WS_ALLOWED_ORIGINS": ALLOWED_ORIGIN},
        ).start()
        try:
            with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
                serve(app, server)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
