"""Example Celery app: tasks that report progress, show step results and ask
their owner before going on.

    celery -A examples.tasks worker -P prefork -c 2
    celery -A examples.tasks ws serve
"""

from __future__ import annotations

import os
import time

from celery import Celery

from celery_ws import CeleryWS, ProgressTask, TaskStepResult, confirm_step

REDIS_URL = os.environ.get("CELERY_WS_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("examples", broker=os.environ.get("CELERY_BROKER_URL", REDIS_URL), backend=REDIS_URL)
app.conf.update(
    task_track_started=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True
)
CeleryWS(app)


@app.task(base=ProgressTask, bind=True)
def import_rows(self: ProgressTask, path: str, rows: int = 50, delay: float = 0.02) -> dict[str, object]:
    """Import rows, show the validation outcome, and ask before writing."""
    for i in range(rows):
        time.sleep(delay)
        self.progress(i + 1, rows, message=f"Importing rows from {path}")
    errors = rows // 10
    self.step_result(
        TaskStepResult(
            step="validation",
            result={"rows": rows, "errors": errors},
            completed=True,
            message=f"Found {errors} errors",
            status="completed",
        )
    )
    answer = confirm_step(
        TaskStepResult(
            step="validation", message=f"{errors} rows have errors. Write the others?", status="waiting"
        ),
        step=1,
        timeout=300,
    )
    if not answer.proceed:
        return {"written": 0, "stopped_by": answer.answered_by, "feedback": answer.feedback}
    for i in range(rows - errors):
        self.progress(i + 1, rows - errors, message="Writing rows")
    return {"written": rows - errors, "feedback": answer.feedback}


@app.task(base=ProgressTask, bind=True)
def count_to(self: ProgressTask, n: int, delay: float = 0.0) -> int:
    """Report progress n times; the smallest task that shows a live bar."""
    for i in range(n):
        if delay:
            time.sleep(delay)
        self.progress(i + 1, n)
    return n


@app.task
def add(x: int, y: int) -> int:
    return x + y
