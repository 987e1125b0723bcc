"""A typed question for the page's form tests: a pydantic model with every kind
of field the form renders (bounded integer and number, enum, boolean, optional
string, one nested model). Imported by the test module, so the suite's
in-process worker has the task (``shared_task``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from celery import shared_task
from pydantic import BaseModel, Field

from celery_ws import ProgressTask, TaskStepResult
from tests.helpers import seconds


class Mode(StrEnum):
    fast = "fast"
    safe = "safe"


class Address(BaseModel):
    city: str = Field(description="Where the rows are written")
    zip_code: str | None = None


class ImportPlan(BaseModel):
    """How to write the rows."""

    rows: int = Field(ge=1, le=500, description="How many rows to write")
    ratio: float = Field(default=0.5, ge=0, le=1)
    mode: Mode = Mode.safe
    dry_run: bool = False
    note: str = ""
    address: Address


@shared_task(base=ProgressTask, bind=True)
def ask_plan(self: ProgressTask) -> dict[str, Any] | None:
    answer = self.confirm(
        TaskStepResult(step="plan", message="How should the rows be written?", status="waiting"),
        timeout=seconds(60),
        answer_model=ImportPlan,
    )
    return answer.data.model_dump(mode="json") if answer.proceed else None
