"""The task run executing on this thread, and the runs it is nested in.

``progress()`` is called in hot loops, and ``self.request`` walks Celery's
pure-Python thread-local stack on every access (about 0.7 µs, most of what
``progress()`` used to cost). The ``task_prerun`` and ``task_postrun``
handlers, which Celery's tracer always fires as a pair around a run, record
here once per run what ``progress()`` needs. Thread-local, so it stays right
for the threads and gevent pools; each run links to the one it interrupted,
for a task that runs another eagerly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Task

    from .emitter import Emitter, Reporter

__all__ = ["RUNS", "Run", "begin", "current", "end"]


@dataclass(frozen=True, slots=True)
class Run:
    task: Task
    task_id: str
    owner: str
    emitter: Emitter
    #: ``progress()`` of this run, see :meth:`~celery_ws.worker.emitter.Emitter.reporter`
    report: Reporter
    #: the run this one interrupted on the same thread, if any
    outer: Run | None


class _Runs(threading.local):
    #: the innermost run on this thread, read by every ``progress()``
    top: Run | None = None


RUNS = _Runs()


def begin(task: Task, task_id: str, owner: str, emitter: Emitter) -> None:
    RUNS.top = Run(task, task_id, owner, emitter, emitter.reporter(task_id, owner), RUNS.top)


def end(task: Task, task_id: str) -> None:
    run = RUNS.top
    if run is not None and run.task is task and run.task_id == task_id:
        RUNS.top = run.outer


def current(task: Task) -> Run | None:
    """The innermost run on this thread, if it is one of ``task``."""
    run = RUNS.top
    return run if run is not None and run.task is task else None
