"""Celery signal handlers that turn a task's life into events for its owner.

Each handler runs where Celery fires its signal: publish signals in whatever
process sends the task (a web app, or a worker child starting a subtask),
task signals in the process that executes it, ``task_revoked`` and some
failures (a lost worker child, a hard time limit) in the worker's main
process. Every process writes through its own emitter. Handlers are
idempotent: ``emit.lua`` keeps only the first terminal event of a task.

An exception's text reaches the owner only with ``error_detail="message"``
(the default); with ``"class"`` the owner reads its class name and
``_WITHHELD`` instead, and the text stays in the worker's log.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from celery import signals

from ..deferred import is_waiting
from ..exceptions import TaskCancelled
from ..protocol import event, json_safe
from . import runs
from .deferred import first_run, is_duplicate
from .ownership import inherit_owner, links_of, owner_of

if TYPE_CHECKING:
    from .integration import CeleryWS

__all__ = ["connect"]

logger = logging.getLogger(__name__)

_FLUSH_AFTER_TASK = 5.0
#: bounds what a Redis outage adds to apply_async()
_FLUSH_BEFORE_PUBLISH = 1.0
#: ``error_message`` of a failure when ``error_detail`` is "class"
_WITHHELD = "details are in the worker's log"


def _ws_for(task: Any) -> CeleryWS | None:
    from .integration import CeleryWS

    return CeleryWS.for_app(getattr(task, "app", None))


def _emit(ws: CeleryWS, type_: str, task_id: str, owner: str | None, **fields: Any) -> None:
    ws.emitter().emit(event(type_, task_id=task_id, user_id=owner, **fields))


def _error_message(ws: CeleryWS, error: BaseException | None) -> str:
    """What the owner reads of ``error`` besides its class name."""
    return str(error) if ws.settings.error_detail == "message" else _WITHHELD


def _owner_or_lookup(ws: CeleryWS, request: Any, task_id: str) -> str | None:
    """The main process may see a request without headers; Redis knows the owner."""
    return owner_of(request) or ws.publisher().owner_of(task_id)


def on_before_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Runs in the sending process before the message leaves, so ``task_sent``
    (or ``task_retrying``) is in Redis before any worker can start the task."""
    from .integration import CeleryWS

    if headers is None:
        return
    owner = inherit_owner(headers)
    ws = CeleryWS.for_task_name(sender) if owner and isinstance(sender, str) else None
    if ws is None:
        return
    if headers.get("retries"):
        error = sys.exc_info()[1]
        reason = None if error is None else f"{type(error).__name__}: {_error_message(ws, error)}"
        _emit(
            ws,
            "task_retrying",
            headers["id"],
            owner,
            retries=headers["retries"],
            eta=headers.get("eta"),
            reason=reason,
            **links_of(headers),
        )
    else:
        _emit(ws, "task_sent", headers["id"], owner, name=sender, **links_of(headers))
    ws.emitter().flush(_FLUSH_BEFORE_PUBLISH)


def on_prerun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    ws, owner = _ws_for(sender), owner_of(sender.request)
    if ws and owner and task_id:
        if not first_run(ws, sender.request, task_id):
            return  # a repeated continuation: ProgressTask.before_start skips it, silently
        emitter = ws.emitter()
        runs.begin(sender, task_id, owner, emitter)
        links = links_of(sender.request)
        emitter.started(event("task_started", task_id=task_id, user_id=owner, name=sender.name), links)


def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    ws, owner = _ws_for(sender), owner_of(sender.request)
    if not (ws and owner):
        return
    task_id = sender.request.id
    if is_waiting(result):
        # not the end: the workflow goes on in the continuation once answered
        ws.emitter().waiting(task_id)
        fields = {**links_of(sender.request), "workflow_id": result["workflow_id"]}
        _emit(
            ws,
            "task_waiting",
            task_id,
            owner,
            callback_id=result["callback_id"],
            continuation_id=result["continuation_id"],
            **fields,
        )
    else:
        _emit(ws, "task_succeeded", task_id, owner, result=json_safe(result))


def on_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    ws = _ws_for(sender)
    if ws is None or task_id is None:
        return
    owner = _owner_or_lookup(ws, sender.request, task_id)
    if owner is None:
        return
    if isinstance(exception, TaskCancelled):  # a task that is not a ProgressTask
        report_cancelled(ws, sender.request, task_id, owner)
        return
    _emit(
        ws,
        "task_failed",
        task_id,
        owner,
        error_code=type(exception).__name__,
        error_message=_error_message(ws, exception),
        **links_of(sender.request),
    )
    ws.emitter().flush(_FLUSH_AFTER_TASK)


def report_cancelled(ws: CeleryWS, request: Any, task_id: str, owner: str) -> None:
    """Tell the owner's clients a run ended cancelled (the server tells the
    same story; whichever is stored first is kept)."""
    _emit(
        ws,
        "task_cancelled",
        task_id,
        owner,
        reason="cancelled by user",
        requested_by=ws.publisher().cancelled_by(task_id),
        **links_of(request),
    )
    ws.emitter().flush(_FLUSH_AFTER_TASK)


def on_revoked(
    sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False, **_: Any
) -> None:
    ws = _ws_for(sender)
    if ws is None or request is None:
        return
    owner = _owner_or_lookup(ws, request, request.id)
    if owner:
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        _emit(ws, "task_cancelled", request.id, owner, reason=reason, **links_of(request))
        ws.emitter().flush(_FLUSH_AFTER_TASK)


def on_postrun(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    """Let the task's last events reach Redis before the process takes new work
    (or is shut down)."""
    if task_id is not None:
        runs.end(sender, task_id)
    ws = _ws_for(sender)
    if is_duplicate(sender.request):
        return  # never began: the first run of this continuation is the one to finish
    if ws is not None and task_id is not None and owner_of(sender.request):
        emitter = ws.emitter()
        emitter.finished(task_id)
        if not emitter.flush(_FLUSH_AFTER_TASK):
            logger.warning("events of task %s not yet in Redis after %.0f s", task_id, _FLUSH_AFTER_TASK)


_HANDLERS = (
    (signals.before_task_publish, on_before_publish),
    (signals.task_prerun, on_prerun),
    (signals.task_success, on_success),
    (signals.task_failure, on_failure),
    (signals.task_revoked, on_revoked),
    (signals.task_postrun, on_postrun),
)


def connect() -> None:
    """Connect every handler once per process (``dispatch_uid`` dedupes)."""
    for signal, handler in _HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"celery_ws.{handler.__name__}")
