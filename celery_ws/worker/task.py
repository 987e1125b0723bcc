"""``ProgressTask``: a task base class that reports to the person who started it.

Usage::

    @app.task(base=ProgressTask, bind=True)
    def import_rows(self, path):
        for i, row in enumerate(rows, 1):
            self.progress(i, len(rows), message="Importing rows")
        self.step_result(TaskStepResult(step="import", message="done", status="completed"))

    import_rows.delay_for("user_123", "data.csv")

``progress()`` costs well under a microsecond: it records the latest value and a
background thread writes it at most once per ``progress_interval``. It is also
where a running task learns that its owner cancelled it: it raises
:class:`~celery_ws.TaskCancelled`, and the task ends as revoked rather than
failed.
"""

from __future__ import annotations

from typing import Any, Unpack

from celery import Task
from celery.result import AsyncResult

from ..exceptions import TaskCancelled
from ..protocol import TaskStepResult, UserConfirmation, step_result_event
from ..publisher import ConfirmOptions
from . import runs
from .confirm import confirm_step
from .integration import CeleryWS
from .ownership import OWNER_HEADER, owner_of

__all__ = ["ProgressTask"]


class ProgressTask(Task):  # type: ignore[misc]
    #: a cancelled task is expected behaviour, not an error worth a traceback
    throws = (TaskCancelled,)

    # -- starting a task for a person --------------------------------------------------

    def delay_for(self, user_id: str, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay()`` on behalf of ``user_id``, who will see its events."""
        return self.apply_async_for(user_id, args, kwargs)

    def apply_async_for(
        self,
        user_id: str,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async()`` on behalf of ``user_id``; other options pass through."""
        headers = {**(options.pop("headers", None) or {}), OWNER_HEADER: user_id}
        return self.apply_async(args, kwargs, headers=headers, **options)

    # -- reporting from inside the task -------------------------------------------------

    def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; cheap enough for a tight loop. Does nothing outside a
        run of this task that has an owner.

        Raises:
            TaskCancelled: the owner cancelled this task.
        """
        run = runs.RUNS.top  # runs.current(self), inlined: this is the hot path
        if run is not None and run.task is self and run.report(current, total, message):
            raise TaskCancelled(run.task_id)

    def step_result(self, result: TaskStepResult | None = None, /, **fields: Any) -> None:
        """Show the outcome of a step; ``fields`` build a TaskStepResult in place."""
        result = result if result is not None else TaskStepResult(**fields)
        run = runs.current(self)
        if run is not None:
            run.emitter.emit(step_result_event(result, task_id=run.task_id, user_id=run.owner))

    def confirm(
        self,
        result: TaskStepResult,
        *,
        step: int | None = None,
        **options: Unpack[ConfirmOptions],
    ) -> UserConfirmation:
        """:func:`~celery_ws.confirm_step` for this task."""
        return confirm_step(result, step=step, task=self, **options)

    @property
    def is_cancelled(self) -> bool:
        """Whether the owner cancelled this task (one Redis read)."""
        ws = CeleryWS.for_app(self.app)
        task_id = self.request.id
        if ws is None or task_id is None:
            return False
        return ws.emitter().is_cancelled(task_id) or ws.publisher().is_cancelled(task_id)

    # -- Celery hooks --------------------------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Runs in the executing process before ``run``: a task cancelled while
        it was queued stops here, even where the broker never saw a revoke."""
        if owner_of(self.request) is not None and self.is_cancelled:
            raise TaskCancelled(task_id)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Runs in the executing process; its return value is ignored."""
        if isinstance(exc, TaskCancelled) and self.backend is not None:
            self.backend.mark_as_revoked(task_id, reason="cancelled by user", request=self.request)
