"""The publisher sequences of workflows: storing a deferred question with its
continuation, and cancelling a task together with the workflow it belongs to.

Sequences as in :mod:`~celery_ws.publisher.core`: generators of effects that
:class:`~celery_ws.Publisher` and :class:`~celery_ws.AsyncPublisher` carry out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from ..deferred import Continuation
from ..exceptions import ContinuationUnavailable
from ..protocol import TaskStepResult, event
from ..storage import CANCEL, CancelOutcome, cancel_call, cancel_reply, confirmation_ttl, text
from .core import Commands, Core, Pipe, Steps, _command, _retrying, _script, _scripted
from .question import ConfirmOptions, Question

__all__ = ["Cancellation", "cancel", "defer"]

_CANCEL = _script(CANCEL)
#: how often a cancel reads the workflow again when it moved on meanwhile
_CANCEL_ATTEMPTS = 5


class Cancellation(NamedTuple):
    """What :meth:`Publisher.cancel <celery_ws.Publisher.cancel>` did."""

    #: ``ok``, or why nothing was cancelled: ``not_found``, ``finished`` (the
    #: task, or its workflow, has ended), ``forbidden`` (``owner_only`` and
    #: ``by`` does not own it), ``moved`` (the workflow kept moving on)
    outcome: CancelOutcome
    #: the task's owner (None when unknown, or not to be told)
    owner: str | None
    #: the Celery ids to revoke, where the Celery app is at hand
    #: (``app.control.revoke``): the task and its workflow's next continuation
    revoke: tuple[str, ...]


def defer(
    core: Core,
    step_result: TaskStepResult,
    user_id: str,
    task_id: str,
    step: int | None,
    continuation: Continuation,
    options: ConfirmOptions,
) -> Steps[str]:
    """Store a deferred question and show it; its callback id.

    Refused at once when no server replica that can send continuations is
    registered: the question would wait for nobody.

    Raises:
        ContinuationUnavailable: no ``celery-ws serve --app`` is running.
    """
    links = {**core.links_of(task_id), "workflow_id": continuation.workflow_id}
    question = Question(
        core.settings,
        step_result,
        user_id,
        task_id,
        step,
        options,
        links=links,
        record=lambda q: continuation.record(q.default, q.timeout, q.links.get("parent_task_id")),
    )
    yield from _retrying(question, lambda: _store(core, question, continuation))
    return question.callback_id


def _store(core: Core, question: Question, continuation: Continuation) -> Steps[None]:
    keys = core.settings.keys
    continuers = yield from _command(
        lambda pipe: pipe.zrangebyscore(keys.continuers, time.time(), "+inf", start=0, num=1)
    )
    if not continuers:
        raise ContinuationUnavailable(
            "no celery-ws server that can send continuations is running (celery-ws serve --app "
            "MODULE:APP): a deferred question would wait for nobody; start one, or use confirm_step()"
        )
    ttl = confirmation_ttl(core.settings, question.deadline)

    home = keys.home(question.owner)

    def store(pipe: Pipe) -> None:
        question.open(pipe)
        pipe.zadd(home.deferred, {question.callback_id: question.deadline})
        # the continuation is known before it exists: its owner, its workflow and
        # the task it continues, so that a cancel of the workflow reaches it
        following = ["owner", question.owner, "workflow", continuation.workflow_id]
        pipe.hset(home.task(continuation.task_id), items=[*following, "parent", continuation.parent_task_id])
        pipe.expire(home.task(continuation.task_id), ttl)
        pipe.hset(home.task(continuation.workflow_id), "next", continuation.task_id)
        pipe.expire(home.task(continuation.workflow_id), ttl)

    def elsewhere(pipe: Pipe) -> None:
        question.index_elsewhere(pipe)
        if keys.clustered:
            pipe.set(keys.owner(continuation.task_id), question.owner, ex=ttl)

    yield Commands(store, transaction=True)
    if question.others or keys.clustered:
        yield Commands(elsewhere)
    yield from core.announce(question.requests())


def _next_of(workflow_key: str) -> Callable[[Pipe], object]:
    return lambda pipe: pipe.hget(workflow_key, "next")


def cancel(core: Core, task_id: str, by: str | None, *, owner_only: bool) -> Steps[Cancellation]:
    """Cancel a task and the workflow it belongs to: ``cancel.lua`` marks them,
    closes their questions (a deferred one sends no continuation), wakes a
    blocking one; then ``task_cancelled`` for the owner's clients."""
    # a user may cancel only their own tasks: look in their home (another's
    # task is not there, and refused like an unknown one)
    home_owner = by if owner_only and by else (yield from core.owner_of(task_id))
    home = core.settings.keys.home(home_owner or task_id)
    outcome: CancelOutcome = "moved"
    owner: str | None = None
    parent: bytes | str | None = None
    workflow, next_id = task_id, None
    for _ in range(_CANCEL_ATTEMPTS):
        flow, parent = yield from _command(lambda pipe: pipe.hmget(home.task(task_id), "workflow", "parent"))
        workflow = text(flow) or task_id
        next_id = text((yield from _command(_next_of(home.task(workflow)))))
        call = cancel_call(
            core.settings,
            task_id,
            owner=home_owner,
            check=by if owner_only else None,
            recorded_by=by,
            workflow_id=workflow,
            next_id=next_id,
        )
        (reply,) = yield from _scripted(_CANCEL, [call])
        outcome, owner = cancel_reply(reply)
        if outcome != "moved":
            break
    if outcome != "ok":
        return Cancellation(outcome, owner, ())
    links = {"workflow_id": workflow} if workflow != task_id or next_id else {}
    if text(parent):
        links["parent_task_id"] = text(parent) or ""
    yield from core.emit(
        event(
            "task_cancelled",
            task_id=task_id,
            user_id=owner,
            reason="cancelled by user",
            requested_by=by,
            **links,
        )
    )
    return Cancellation(outcome, owner, (task_id, next_id) if next_id and next_id != task_id else (task_id,))
