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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .emitter import Emitter

__all__ = ["Run", "begin", "current", "end"]

#: (task instance, task id, owner, this process' emitter)
Run = tuple[Any, str, str, "Emitter"]


class _Runs(threading.local):
    def __init__(self) -> None:
        self.stack: list[Run] = []


_RUNS = _Runs()


def begin(task: Any, task_id: str, owner: str, emitter: Emitter) -> None:
    _RUNS.stack.append((task, task_id, owner, emitter))


def end(task: Any, task_id: str) -> None:
    stack = _RUNS.stack
    if stack and stack[-1][0] is task and stack[-1][1] == task_id:
        stack.pop()


def current(task: Any) -> Run | None:
    """The innermost run on this thread, if it is one of ``task``."""
    stack = _RUNS.stack
    if stack:
        run = stack[-1]
        if run[0] is task:
            return run
    return None
