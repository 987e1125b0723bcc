"""``confirm_step()``: stop a task until its owner answers.

The request is stored in Redis before anyone is told about it, then the task
blocks on a Redis list (``BLPOP``) until a server replica pushes the answer, the
task is cancelled, or the deadline passes. No polling: an answer wakes the task
at once.
"""

from __future__ import annotations

from typing import Unpack

from celery import Task, current_task

from ..exceptions import NotInTaskError, TaskCancelled
from ..protocol import TaskStepResult, UserConfirmation
from ..publisher import ConfirmOptions
from .integration import CeleryWS
from .ownership import owner_of

__all__ = ["confirm_step"]

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
    task = task if task is not None else current_task
    request = task.request if task else None
    if request is None or request.id is None:
        raise NotInTaskError("confirm_step() must be called inside a running task")
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
    emitter.flush(_FLUSH_BEFORE_ASK)  # the person sees earlier events first
    if emitter.is_cancelled(request.id):
        raise TaskCancelled(request.id)
    return ws.publisher().notify_user(step_result, owner, request.id, step, **options)
