"""The tutorial's tasks: run them with ``celery -A tasks worker`` and
``celery-ws serve --app tasks:app`` from the directory holding this file."""

# --8<-- [start:app]
import os
import time

from celery import Celery

from celery_ws import CeleryWS, ProgressTask, TaskStepResult, confirm_step

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("tasks", broker=REDIS_URL, backend=REDIS_URL)
CeleryWS(app)  # celery-ws reads its settings from app.conf and CELERY_WS_* variables
# --8<-- [end:app]


# --8<-- [start:import_rows]
@app.task(base=ProgressTask, bind=True)
def import_rows(self: ProgressTask, path: str, rows: int = 100) -> dict[str, int]:
    """Import ``rows`` rows from ``path``, showing how far it got."""
    for i in range(rows):
        time.sleep(0.03)  # the real work goes here
        self.progress(i + 1, rows, message=f"Importing {path}")
    return {"imported": rows}
    # --8<-- [end:import_rows]


# --8<-- [start:clean_rows]
@app.task(base=ProgressTask, bind=True)
def clean_rows(self: ProgressTask, path: str, rows: int = 100) -> dict[str, object]:
    """Find bad rows, then ask the person before deleting them."""
    for i in range(rows):
        time.sleep(0.01)
        self.progress(i + 1, rows, message=f"Checking {path}")
    bad = rows // 10
    answer = confirm_step(
        TaskStepResult(step="check", message=f"{bad} rows are bad. Delete them?", status="waiting"),
        timeout=600,
        default=False,  # nobody answered in 10 minutes: keep the rows
    )
    if not answer.proceed:
        return {"deleted": 0, "feedback": answer.feedback}
    return {"deleted": bad, "feedback": answer.feedback, "by": answer.answered_by}
    # --8<-- [end:clean_rows]
