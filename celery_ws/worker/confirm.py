"""``confirm_step()``: stop a task until its owner answers.

The request is stored in Redis before anyone is told about it, then the task
blocks on a Redis list (``BLPOP``) until a server replica pushes the answer, the
task is cancelled, or the deadline passes. No polling: an answer wakes the task
at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Unpack

from celery import Task, current_task

from ..exceptions import NotInTaskError, TaskCancelled
from ..protocol import TaskStepResult, UserConfirmation
from ..publisher import ConfirmOptions
from .integration import CeleryWS
from .ownership import owner_of

__all__ = ["Asking", "asking", "confirm_step"]

_FLUSH_BEFORE_ASK = 5.0


def confirm_step(
    step_result: TaskStepResult,
    *,
    step: int | None = None,
    task: Task | None = None,
    **options: Unpack[ConfirmOptions],
) -> UserConfirmation:
    """Ask the running task's owner to proceed or cancel, and wait for the answer.

    Args:
        step_result: what to show the person.
        step: the step number, echoed in the request.
        task: the running task; Celery's current task when None.
        options: ``timeout``, ``default``, ``assignees`` (the task's owner when
            None), ``answer_model``: see :class:`~celery_ws.publisher.ConfirmOptions`.

    Raises:
        NotInTaskError: called outside a task, or in a task without an owner.
        ConfirmationTimeout: nobody answered and no ``default`` was given.
        TaskCancelled: the owner cancelled the task.
    """
    context = asking(task if task is not None else current_task, "confirm_step()")
    return context.ws.publisher().notify_user(step_result, context.owner, context.request.id, step, **options)


class Asking(NamedTuple):
    """Who asks a question, and for whom."""

    request: Any
    owner: str
    ws: CeleryWS


def asking(task: Task | None, what: str) -> Asking:
    """The running task's request, its owner and its ``CeleryWS``, once the
    task's earlier events are stored (the person sees them before the question).

    Raises:
        NotInTaskError: ``what`` was called outside a task, in a task without an
            owner, or for an app without ``CeleryWS(app)``.
        TaskCancelled: the owner cancelled the task.
    """
    request = task.request if task else None
    if task is None or request is None or request.id is None:
        raise NotInTaskError(f"{what} must be called inside a running task")
    owner = owner_of(request)
    if owner is None:
        raise NotInTaskError(
            f"task {request.id} has no owner to ask; start it with delay_for() "
            "or headers={'celery_ws_user': ...}"
        )
    ws = CeleryWS.for_app(task.app)
    if ws is None:
        raise NotInTaskError(f"CeleryWS(app) was not called for {task.app.main!r}")
    emitter = ws.emitter()
    emitter.flush(_FLUSH_BEFORE_ASK)
    if emitter.is_cancelled(request.id):
        raise TaskCancelled(request.id)
    return Asking(request, owner, ws)
