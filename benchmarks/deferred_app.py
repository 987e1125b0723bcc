"""The Celery app of the ``deferred`` benchmark section: a real worker and
``celery-ws serve --app benchmarks.deferred_app:app`` both load it."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from celery_ws import CeleryWS, ProgressTask, TaskStepResult, confirm_step

REDIS_URL = os.environ.get("CELERY_WS_REDIS_URL", "redis://127.0.0.1:6379/0")
RUNNING = "bench:deferred:running"  # tasks between their start and their return (INCR / DECR)

app = Celery("bench_deferred", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench-deferred",
)
CeleryWS(app)


def _running(delta: int) -> None:
    app.backend.client.incrby(RUNNING, delta)


@app.task(base=ProgressTask, bind=True, name="bench.deferred.block")
def block(self: ProgressTask, timeout: float = 30.0) -> float:
    """A blocking question: holds its slot until answered; returns now - the answer's stamp."""
    _running(1)
    try:
        answer = confirm_step(
            TaskStepResult(step="review", message="ok?", status="waiting"), step=1, timeout=timeout
        )
        return time.time() - float(answer.feedback or "nan")
    finally:
        _running(-1)


@app.task(base=ProgressTask, bind=True, name="bench.deferred.ask")
def ask(self: ProgressTask, timeout: float = 60.0) -> Any:
    """A deferred question: asks and returns; ``then_`` runs with the answer."""
    _running(1)
    try:
        return self.ask(
            TaskStepResult(step="review", message="ok?", status="waiting"),
            then=then_.s(),
            step=1,
            timeout=timeout,
        )
    finally:
        _running(-1)


@app.task(base=ProgressTask, bind=True, name="bench.deferred.then")
def then_(self: ProgressTask, answer: Any) -> str:
    return "done"


@app.task(base=ProgressTask, bind=True, name="bench.deferred.noop")
def noop(self: ProgressTask) -> str:
    return "done"
