"""The task runs executing on this thread, innermost last.

``progress()`` is called in hot loops, and ``self.request`` walks Celery's
pure-Python thread-local stack on every access (about 0.7 µs, most of what
``progress()`` used to cost). The ``task_prerun`` and ``task_postrun``
handlers, which Celery's tracer always fires as a pair around a run, record
here once per run what ``progress()`` needs. A thread-local stack keeps this
right for the threads and gevent pools and for a task that runs another
eagerly; a task called directly, outside the tracer, has no entry and takes
the slow path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emitter import Emitter, Reporter

__all__ = ["RUNS", "Run", "begin", "current", "end"]

@dataclass(frozen=True, slots=True)
class Run:
    task: Any
    task_id: str
    owner: str
    emitter: Emitter
    #: ``progress()`` of this run, see :meth:`~celery_ws.worker.emitter.Emitter.reporter`
    report: Reporter

    @classmethod
    def of(cls, task: Any, task_id: str, owner: str, emitter: Emitter) -> Run:
        return cls(task, task_id, owner, emitter, emitter.reporter(task_id, owner))


class _Runs(threading.local):
    def __init__(self) -> None:
        self.stack: list[Run] = []
        #: the innermost run, read by every ``progress()``: one attribute lookup
        self.top: Run | None = None


#: this thread's runs
RUNS = _Runs()


def begin(task: Any, task_id: str, owner: str, emitter: Emitter) -> None:
    RUNS.top = Run.of(task, task_id, owner, emitter)
    RUNS.stack.append(RUNS.top)


def end(task: Any, task_id: str) -> None:
    stack = RUNS.stack
    if stack and stack[-1].task is task and stack[-1].task_id == task_id:
        stack.pop()
        RUNS.top = stack[-1] if stack else None


def current(task: Any) -> Run | None:
    """The innermost run on this thread, if it is one of ``task``."""
    run = RUNS.top
    return run if run is not None and run.task is task else None
