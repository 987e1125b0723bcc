"""``ProgressTask.ask()``: ask the owner and return at once; a continuation
task runs with the answer.

The question is stored (with its continuation: a signature, in Celery's JSON,
and the continuation's id, chosen now) before anyone is told of it, and the
task returns :func:`~celery_ws.deferred.waiting_marker`: its worker slot is
free while the person thinks. A ``celery-ws serve --app`` replica sends the
continuation once the answer (or the deadline) is in.

The continuation is sent at least once and runs at most once: a run that is
not the first of its id (a replica re-sent it after losing its claim, or the
broker delivered it again) is skipped here, by a ``SET NX`` of the run's key
in ``task_prerun`` and :class:`celery.exceptions.Ignore` from ``before_start``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Unpack

import redis
from celery import Task
from celery.canvas import Signature

from ..deferred import Continuation, is_waiting, model_path, waiting_marker
from ..exceptions import TaskCancelled
from ..protocol import TaskStepResult
from ..publisher import ConfirmOptions
from .ownership import continuation_of, links_of

if TYPE_CHECKING:
    from celery.result import AsyncResult

    from .integration import CeleryWS

__all__ = ["ask", "final_result", "first_run", "is_duplicate"]

logger = logging.getLogger(__name__)

#: set on the request of a repeated continuation run, which is skipped
_DUPLICATE = "celery_ws_duplicate"


def ask(
    task: Task,
    step_result: TaskStepResult,
    *,
    then: Signature,
    step: int | None = None,
    **options: Unpack[ConfirmOptions],
) -> dict[str, str]:
    """Store a deferred question for the running task's owner; return the marker
    the task returns (see :meth:`ProgressTask.ask <celery_ws.ProgressTask.ask>`).

    Raises:
        NotInTaskError: outside a task, or in a task without an owner.
        TypeError: ``then`` is not one ``ProgressTask``'s signature, or its
            arguments are not JSON.
        ContinuationUnavailable: no ``celery-ws serve --app`` is running.
        TaskCancelled: the owner cancelled the task.
    """
    from .confirm import asking  # the signal handlers import this module

    then = _continuation(task, then)
    request, owner, ws = asking(task, "ask()")
    model = options.get("answer_model")
    continuation = Continuation(
        then=dict(then),
        task_id=then.id,
        workflow_id=links_of(request).get("workflow_id", request.id),
        parent_task_id=request.id,
        answer_model=model_path(model) if model is not None else None,
    )
    callback_id = ws.publisher().defer(
        step_result, owner, request.id, step, continuation=continuation, **options
    )
    return waiting_marker(callback_id, continuation.task_id, continuation.workflow_id)


def _continuation(task: Task, then: Any) -> Signature:
    """``then``, copied, with its task id fixed now.

    Raises:
        TypeError: not one task's signature, or not a ProgressTask's (only its
            base takes the answer in and skips a repeated run).
    """
    from .task import ProgressTask

    if not isinstance(then, Signature) or then.subtask_type:
        raise TypeError(
            "then= takes one task's signature, such as write_rows.s(path); "
            "start a chain or a group from inside the continuation"
        )
    target = task.app.tasks.get(then.task)
    if not isinstance(target, ProgressTask):
        raise TypeError(f"then= must name a task with base=ProgressTask; {then.task!r} is not one")
    then = then.clone()
    then.freeze()
    return then


def first_run(ws: CeleryWS, request: Any, task_id: str) -> bool:
    """Whether this run goes on: a continuation's first run claims its id in
    Redis, and a later run of the same id is marked to be skipped. Celery's own
    retries (``request.retries`` > 0) and every other task always run. When
    Redis cannot be reached (redis-py retries first), the run goes on."""
    if continuation_of(request) is None or (getattr(request, "retries", 0) or 0) > 0:
        return True
    key = ws.settings.keys.run(task_id)
    try:
        first = ws.publisher().redis.set(key, "1", nx=True, ex=ws.settings.history_ttl)
    except redis.RedisError as exc:
        logger.warning("cannot tell whether continuation %s ran already (%s); running it", task_id, exc)
        return True
    if not first:
        logger.info("continuation %s ran already; skipping this repeated message", task_id)
        setattr(request, _DUPLICATE, True)
    return bool(first)


def is_duplicate(request: Any) -> bool:
    """Whether :func:`first_run` marked this run as a repeat to skip."""
    return getattr(request, _DUPLICATE, None) is True


def final_result(result: AsyncResult, timeout: float | None = None, *, interval: float = 0.5) -> Any:
    """What a workflow ends with, from its first task's ``AsyncResult``.

    A task that asked a deferred question succeeds with a marker naming its
    continuation; this follows each marker to the continuation (and the
    continuation's own, if it asked again) until a task returns something
    else, and returns that. A failure of the task it ends in is raised, as
    ``result.get()`` raises it.

    Raises:
        celery.exceptions.TimeoutError: ``timeout`` seconds passed first.
        TaskCancelled: the workflow was cancelled while waiting (its
            continuation will not run); known when ``CeleryWS`` is attached to
            the result's app.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    from .integration import CeleryWS

    deadline = None if timeout is None else time.monotonic() + timeout
    ws = CeleryWS.for_app(result.app)
    current = result
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            if remaining is not None and remaining <= 0:
                raise CeleryTimeout(f"the workflow of {result.id} did not end within {timeout} s")
            try:
                value = current.get(
                    timeout=interval if remaining is None else min(interval, remaining),
                    disable_sync_subtasks=False,
                )
            except CeleryTimeout:
                if ws is not None and ws.publisher().is_cancelled(current.id):
                    raise TaskCancelled(current.id) from None
                continue
        except (CeleryTimeout, TaskCancelled):
            _stop_waiting(current)
            raise
        if not is_waiting(value):
            return value
        current = type(current)(value["continuation_id"], app=current.app)


def _stop_waiting(result: AsyncResult) -> None:
    """Unsubscribe from a result nobody waits for any more, now (rather than
    when it is collected, perhaps once the result backend is gone)."""
    remove = getattr(result.backend, "remove_pending_result", None)
    if remove is not None:
        remove(result)
