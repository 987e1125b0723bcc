"""The import the page starts: live progress, a step result, a typed question."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from pydantic import BaseModel, Field

from celery_ws import ProgressTask, TaskStepResult, UserConfirmation, confirm_step


# The answer to the task's question: its JSON schema travels with the question
# (the page builds a form from it, descriptions included) and the task gets an
# instance back as answer.data.
class WriteOptions(BaseModel):
    """How to write the imported rows."""

    skip_invalid: bool = Field(True, description="Leave out the rows with errors")
    batch_size: int = Field(100, ge=1, le=1000, description="Rows written per batch")


@shared_task(base=ProgressTask, bind=True)
def import_orders(self: ProgressTask, name: str, rows: int = 40, delay: float = 0.05) -> dict[str, Any]:
    """Read ``rows`` rows, report the invalid ones, ask how to write, write."""
    for i in range(rows):
        time.sleep(delay)
        self.progress(i + 1, rows, message=f"Reading {name}")
    invalid = rows // 10
    self.step_result(
        TaskStepResult(
            step="validation",
            result={"rows": rows, "invalid": invalid},
            completed=True,
            message=f"{invalid} of {rows} rows are invalid",
            status="completed",
        )
    )
    answer: UserConfirmation = confirm_step(
        TaskStepResult(step="write", message=f"Write the rows of {name}?", status="waiting"),
        answer_model=WriteOptions,
        timeout=600,
    )
    if not answer.proceed:
        return {"written": 0, "stopped_by": answer.answered_by, "feedback": answer.feedback}
    options = answer.data
    assert isinstance(options, WriteOptions)
    written = rows - invalid if options.skip_invalid else rows
    for done in range(0, written, options.batch_size):
        time.sleep(delay)
        self.progress(min(done + options.batch_size, written), written, message=f"Writing {name}")
    return {"written": written, "batch_size": options.batch_size, "answered_by": answer.answered_by}
