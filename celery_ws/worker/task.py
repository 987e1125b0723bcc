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

import functools
from collections.abc import Callable
from typing import Any, Unpack

from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore
from celery.result import AsyncResult

from ..deferred import ANSWER_MODEL_HEADER, answer_argument
from ..exceptions import TaskCancelled
from ..protocol import TaskStepResult, UserConfirmation, step_result_event
from ..publisher import ConfirmOptions
from . import runs
from .confirm import confirm_step
from .deferred import ask, is_duplicate
from .integration import CeleryWS
from .ownership import OWNER_HEADER, continuation_of, header, owner_of
from .signals import report_cancelled

__all__ = ["ProgressTask"]


class ProgressTask(Task):  # type: ignore[misc]
    #: a cancelled task is expected behaviour, not an error worth a traceback
    throws = (TaskCancelled,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each task's ``run`` takes a continuation's answer in (see :meth:`ask`)."""
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_celery_ws_answers", False):
            cls.run = _taking_answers(run)

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

    def ask(
        self,
        result: TaskStepResult,
        *,
        then: Signature,
        step: int | None = None,
        **options: Unpack[ConfirmOptions],
    ) -> dict[str, str]:
        """Ask the owner without holding this worker: store the question, and
        return what this returns (``return self.ask(...)``). When the person
        answers (or ``timeout`` passes), a ``celery-ws serve --app`` replica sends
        ``then`` (a ProgressTask's signature) with the
        :class:`~celery_ws.UserConfirmation` in front of its arguments (a
        :class:`~celery_ws.ConfirmationTimeout` instead when the question timed
        out without a ``default``), under the same owner, as a continuation of
        this task's workflow. The keywords are ``confirm()``'s.

        Raises:
            ContinuationUnavailable: no ``celery-ws serve --app`` is running.
            TypeError: ``then`` is not one ProgressTask's signature, or its
                arguments are not JSON.
        """
        return ask(self, result, then=then, step=step, **options)

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
        it was queued stops here, even where the broker never saw a revoke. A
        continuation's repeated message (same id) is skipped here."""
        if is_duplicate(self.request):
            raise Ignore()
        if owner_of(self.request) is not None and self.is_cancelled:
            raise self._ended_cancelled(TaskCancelled(task_id))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TaskCancelled as cancelled:
            raise self._ended_cancelled(cancelled) from None

    def _ended_cancelled(self, cancelled: TaskCancelled) -> BaseException:
        """A run in a worker that ends cancelled: its owner is told, the result
        backend records it REVOKED, and what to raise is Celery's ``Ignore``, so
        that no FAILURE is stored first (an ``AsyncResult`` keeps the first
        finished state it reads). Called directly or eagerly, it raises
        ``TaskCancelled`` as it is."""
        request = self.request
        ws = CeleryWS.for_app(self.app)
        owner = owner_of(request)
        if request.called_directly or request.is_eager or ws is None or owner is None:
            return cancelled
        report_cancelled(ws, request, request.id, owner)
        if self.backend is not None:
            self.backend.mark_as_revoked(request.id, reason="cancelled by user", request=request)
        ignore: BaseException = Ignore()
        return ignore


def _taking_answers(run: Any) -> Callable[..., Any]:
    """``run`` of a ProgressTask: in a continuation's run, the first argument
    (the answer, as JSON) becomes a UserConfirmation (typed ``data`` included)
    or a ConfirmationTimeout. ``bind=False`` tasks' ``run`` is a staticmethod."""
    function = run.__func__ if isinstance(run, staticmethod) else run
    bound = not isinstance(run, staticmethod)

    @functools.wraps(function)
    def answered(self: ProgressTask, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if args and continuation_of(request) is not None:
            args = (answer_argument(args[0], header(request, ANSWER_MODEL_HEADER)), *args[1:])
        return function(self, *args, **kwargs) if bound else function(*args, **kwargs)

    answered._celery_ws_answers = True  # type: ignore[attr-defined]
    return answered
