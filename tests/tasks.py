"""Tasks the test suite runs on real workers (shared, so any test app has them)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from celery import shared_task
from pydantic import BaseModel

from celery_ws import (
    CeleryWS,
    ConfirmationTimeout,
    ProgressTask,
    TaskStepResult,
    UserConfirmation,
    confirm_step,
)
from celery_ws.worker import owner_of
from tests.helpers import seconds

#: upper bound for any loop in a test task, so none can run away
MAX_SECONDS = seconds(30)


@shared_task(base=ProgressTask, bind=True)
def report(self: ProgressTask, n: int, step: str | None = None) -> dict[str, Any]:
    for i in range(n):
        self.progress(i + 1, n, message="working")
    if step:
        self.step_result(
            TaskStepResult(
                step=step, result={"n": n}, completed=True, message=f"{step} done", status="completed"
            )
        )
    return {"n": n, "ratio": Decimal("1.5")}  # not JSON: sent as its str()


@shared_task(base=ProgressTask, bind=True)
def ask(
    self: ProgressTask,
    timeout: float = seconds(20),
    default: bool | None = None,
    assignees: list[str] | None = None,
) -> dict[str, Any]:
    answer = confirm_step(
        TaskStepResult(step="review", message="Continue?", status="waiting", result={"rows": 3}),
        step=1,
        timeout=timeout,
        default=default,
        assignees=assignees,
    )
    return answer.model_dump()


@shared_task(base=ProgressTask, bind=True)
def fail(self: ProgressTask) -> None:
    raise ValueError("the input is broken")


@shared_task(base=ProgressTask, bind=True, max_retries=1, default_retry_delay=0)
def retry_once(self: ProgressTask) -> str:
    try:
        if self.request.retries == 0:
            raise RuntimeError("first try fails")
    except RuntimeError as exc:
        raise self.retry(exc=exc, countdown=0) from exc
    return "second try"


@shared_task(base=ProgressTask, bind=True)
def spin(self: ProgressTask, delay: float = 0.01) -> str:
    """Report progress until cancelled (or MAX_SECONDS pass)."""
    return _spin(self, delay, "spinning")


@shared_task(base=ProgressTask, bind=True)
def ask_then_spin(self: ProgressTask, delay: float = 0.05) -> str:
    """A question, then progress until cancelled (or MAX_SECONDS pass): keeps
    running after its answer, so what a late viewer sees of an answered
    question is not the task's end closing it."""
    _ask_to_continue()
    return _spin(self, delay, "after the answer")


@shared_task(base=ProgressTask, bind=True)
def ask_then_sleep(self: ProgressTask, pause: float) -> bool:
    """A question, then ``pause`` seconds of saying nothing at all."""
    answer = _ask_to_continue()
    time.sleep(min(pause, MAX_SECONDS))
    return answer.proceed


def _spin(task: ProgressTask, delay: float, message: str) -> str:
    deadline = time.monotonic() + MAX_SECONDS
    i = 0
    while time.monotonic() < deadline:
        i += 1
        task.progress(i, None, message=message)
        time.sleep(delay)
    return "never cancelled"


def _ask_to_continue() -> UserConfirmation:
    return confirm_step(
        TaskStepResult(step="review", message="Continue?", status="waiting"), step=1, timeout=seconds(20)
    )


@shared_task(base=ProgressTask, bind=True)
def spawn(self: ProgressTask) -> str:
    """Start a child task without naming an owner: it must inherit ours."""
    return report.delay(2).id


@shared_task(base=ProgressTask, bind=True)
def nest(self: ProgressTask, depth: int = 1) -> str | None:
    """Progress around a run of this same task, eager, inside it."""
    self.progress(1, 3, message=f"depth {depth}")
    inner = None
    if depth:
        inner = nest.apply(args=(depth - 1,), headers={"celery_ws_user": self.request.celery_ws_user}).id
    self.progress(3, 3, message=f"depth {depth}")
    return inner


@shared_task
def plain(x: int) -> int:
    return x * 2


@shared_task(base=ProgressTask, bind=True)
def import_rows(self: ProgressTask, path: str) -> str:
    """Stands in for examples.tasks.import_rows in the README's snippets."""
    self.progress(1, 1, message=f"imported {path}")
    return path


@shared_task(base=ProgressTask, bind=True)
def progress_then_ask(
    self: ProgressTask, steps: int = 20, delay: float = 0.1, timeout: float = seconds(20)
) -> dict[str, Any]:
    """Browser tests: progress, a step result, a question, then more progress."""
    delay = min(delay, MAX_SECONDS / (4 * max(steps, 1)))
    for i in range(steps):
        self.progress(i + 1, 2 * steps, message=f"Preparing row {i + 1} of {steps}")
        time.sleep(delay)
    self.step_result(
        TaskStepResult(
            step="prepare",
            result={"rows": steps},
            completed=True,
            message=f"Prepared {steps} rows",
            status="completed",
        )
    )
    answer = confirm_step(
        TaskStepResult(
            step="write", message=f"Write {steps} rows?", status="waiting", result={"rows": steps}
        ),
        step=2,
        timeout=timeout,
    )
    if not answer.proceed:
        return {"written": 0, "feedback": answer.feedback}
    for i in range(steps):
        self.progress(steps + i + 1, 2 * steps, message=f"Writing row {i + 1} of {steps}")
        time.sleep(delay)
    return {"written": steps, "feedback": answer.feedback, "answered_by": answer.answered_by}


@shared_task(base=ProgressTask, bind=True)
def slow_progress(self: ProgressTask, steps: int = 40, delay: float = 0.1) -> str:
    """Browser tests: steady progress for steps * delay seconds, then success."""
    delay = min(delay, MAX_SECONDS / max(steps, 1))
    for i in range(steps):
        self.progress(i + 1, steps, message=f"Step {i + 1} of {steps}")
        time.sleep(delay)
    return "finished"


@shared_task(base=ProgressTask, bind=True)
def report_and_ask(
    self: ProgressTask, n: int = 5, delay: float = 0.05, timeout: float = seconds(20)
) -> dict[str, Any]:
    """Progress, a step result, then a question: everything a watcher shows (tests/e2e/test_watch.py)."""
    for i in range(n):
        time.sleep(delay)
        self.progress(i + 1, n, message="checking")
    self.step_result(
        TaskStepResult(
            step="validation",
            result={"rows": n, "errors": 0},
            completed=True,
            message="all rows valid",
            status="completed",
        )
    )
    answer = confirm_step(
        TaskStepResult(step="write", message="Write the rows?", status="waiting"), step=2, timeout=timeout
    )
    return answer.model_dump()


class RowLimit(BaseModel):
    rows: int
    note: str = ""


@shared_task(base=ProgressTask, bind=True)
def ask_typed(self: ProgressTask) -> dict[str, Any]:
    answer = self.confirm(
        TaskStepResult(step="limit", message="How many rows?", status="waiting"),
        timeout=seconds(20),
        answer_model=RowLimit,
    )
    if not answer.proceed:
        return {"model": None}
    return {"model": type(answer.data).__name__, **answer.data.model_dump()}


@shared_task(base=ProgressTask, bind=True)
def step_by_step(self: ProgressTask, steps: int = 10, delay: float = 0.5) -> int:
    """Fault tests: a step result every ``delay`` seconds, so an outage lands mid-task."""
    delay = min(delay, MAX_SECONDS / max(steps, 1))
    for i in range(steps):
        self.progress(i + 1, steps)
        self.step_result(step=f"step-{i}", message=f"step {i} done", status="completed", result={"i": i})
        time.sleep(delay)
    return steps


@shared_task(base=ProgressTask, bind=True)
def say_everywhere(self: ProgressTask, text: str) -> str:
    """``text`` wherever a client shows task text: a progress message, a step
    result (name, message, status, result), a question, the result."""
    self.progress(1, 2, message=f"Importing {text}")
    self.step_result(step=text, message=text, status=text, result={"path": text})
    confirm_step(
        TaskStepResult(step=text, message=text, status="waiting", result=[text]), step=2, timeout=seconds(20)
    )
    return text


@shared_task(base=ProgressTask, bind=True, max_retries=1, default_retry_delay=0)
def fail_saying(self: ProgressTask, text: str) -> None:
    """Retry once, then fail, each time with an exception saying ``text``: what
    an owner is told of errors that carry user data or internals."""
    if self.request.retries == 0:
        try:
            raise RuntimeError(text)
        except RuntimeError as exc:  # retry() from a handler, as tasks do: the reason is this exception
            raise self.retry(exc=exc, countdown=0) from exc
    raise ValueError(text)


# -- deferred questions (ProgressTask.ask) ---------------------------------------------------


def runs_key(task_id: str) -> str:
    """Where a continuation counts its runs (in celery-ws' Redis)."""
    return f"cws-test:runs:{{{task_id}}}"


def _count_run(task: ProgressTask) -> int:
    ws = CeleryWS.for_app(task.app)
    assert ws is not None
    return int(ws.publisher().redis.incr(runs_key(task.request.id)))


def _described(task: ProgressTask, answer: Any, tag: str) -> dict[str, Any]:
    request = task.request
    if isinstance(answer, ConfirmationTimeout):
        return {"tag": tag, "timeout": True, "callback_id": answer.callback_id, "owner": owner_of(request)}
    assert isinstance(answer, UserConfirmation), answer
    return {
        "tag": tag,
        "proceed": answer.proceed,
        "feedback": answer.feedback,
        "answered_by": answer.answered_by,
        "timed_out": answer.timed_out,
        "data_type": type(answer.data).__name__,
        "data": answer.data.model_dump() if isinstance(answer.data, BaseModel) else answer.data,
        "owner": owner_of(request),
        "workflow_id": getattr(request, "celery_ws_workflow", None),
        "parent_task_id": getattr(request, "celery_ws_parent", None),
    }


@shared_task(base=ProgressTask, bind=True)
def ask_later(
    self: ProgressTask,
    tag: str = "",
    timeout: float = seconds(30),
    default: bool | None = None,
    assignees: list[str] | None = None,
    typed: bool = False,
    queue: str | None = None,
    again: bool = False,
    hold: float = 0.0,
) -> dict[str, str]:
    """Ask, return at once; ``continue_counting`` (or, with ``again``,
    ``continue_then_ask``) runs with the answer, on ``queue`` when given."""
    self.progress(1, 2, message=f"checking {tag}")
    then = (continue_then_ask if again else continue_counting).s(tag, queue=queue, hold=hold)
    if queue:
        then = then.set(queue=queue)
    return self.ask(
        TaskStepResult(step="review", message=f"Continue {tag}?", status="waiting", result={"tag": tag}),
        then=then,
        step=1,
        timeout=timeout,
        default=default,
        assignees=assignees,
        answer_model=RowLimit if typed else None,
    )


@shared_task(base=ProgressTask, bind=True)
def continue_counting(
    self: ProgressTask, answer: Any, tag: str = "", queue: str | None = None, hold: float = 0.0
) -> dict[str, Any]:
    """A continuation: counts its runs, reports progress, returns what it got."""
    runs = _count_run(self)
    self.progress(1, 1, message=f"continuing {tag}")
    if hold:
        time.sleep(min(hold, MAX_SECONDS))
    return {**_described(self, answer, tag), "runs": runs}


@shared_task(base=ProgressTask, bind=True)
def continue_then_ask(
    self: ProgressTask, answer: Any, tag: str = "", queue: str | None = None, hold: float = 0.0
) -> dict[str, str]:
    """A continuation that asks again: the workflow goes on in a third task."""
    _count_run(self)
    then = continue_counting.s(f"{tag}-2", queue=queue)
    if queue:
        then = then.set(queue=queue)
    return self.ask(
        TaskStepResult(step="second", message=f"And then {tag}?", status="waiting"),
        then=then,
        step=2,
        timeout=seconds(30),
    )


# The README's deferred example (tests/worker/test_deferred.py runs it).
@shared_task(base=ProgressTask, bind=True)
def import_rows_later(self: ProgressTask, path: str, rows: int = 50) -> dict[str, str]:
    """Import, then ask without holding the worker: write_rows runs with the answer."""
    for i in range(rows):
        self.progress(i + 1, rows, message=f"Importing rows from {path}")
    errors = rows // 10
    return self.ask(
        TaskStepResult(
            step="validation", message=f"{errors} rows have errors. Write the others?", status="waiting"
        ),
        then=write_rows.s(path, rows - errors),
        timeout=24 * 3600,
        default=False,
    )


@shared_task(base=ProgressTask, bind=True)
def write_rows(self: ProgressTask, answer: UserConfirmation, path: str, rows: int) -> dict[str, Any]:
    """The continuation: the answer comes first, then write_rows.s()'s arguments."""
    if not answer.proceed:
        return {"written": 0, "stopped_by": answer.answered_by, "timed_out": answer.timed_out}
    for i in range(rows):
        self.progress(i + 1, rows, message=f"Writing rows to {path}")
    return {"written": rows, "feedback": answer.feedback}
