"""Following a workflow: a task that asked a question without holding its
worker, and the continuations that ran with the answers, seen from the first
task's id.

A task that asks a deferred question emits the question (``task_step_result``
with a ``callback_id``) and then ``task_waiting`` instead of ending; once the
answer (or the timeout) is in, the server emits ``task_continued`` (at least
once: the same ``continuation_id`` may come twice) and the continuation runs
under its own Celery id. Every event of a continuation carries ``workflow_id``
(the first task's id) and ``parent_task_id``; a continuation may ask and
continue again. The workflow ``W`` ends with a terminal event whose
``workflow_id`` is ``W``, or whose ``task_id`` is ``W`` when nothing is
pending (a task that never asked, or a waiting workflow cancelled).
"""

from __future__ import annotations

from collections import deque

from ..protocol import TERMINAL_EVENT_TYPES, EventType, ReplyType
from .frames import Frame

__all__ = ["TASK_CONTINUED", "TASK_WAITING", "WorkflowEnd", "Workflows", "workflow_of"]

#: the task asked and returned; not terminal: the workflow waits for the answer
TASK_WAITING = "task_waiting"
#: the answer (or the timeout) is in; the continuation is on its way
TASK_CONTINUED = "task_continued"

#: continuation ids remembered to drop a repeated ``task_continued``
_CONTINUED_IDS = 10_000


def workflow_of(frame: Frame) -> str | None:
    """The workflow an event belongs to: its ``workflow_id``, else its ``task_id``."""
    for key in ("workflow_id", "task_id"):
        value = frame.get(key)
        if value:
            return str(value)
    return None


class Workflows:
    """Which workflows wait on an answer, from their events in arrival order.

    Feed every event to :meth:`see`: it says which workflow the event ends, if
    any. ``task_waiting`` ends none; ``task_continued`` settles what it waited for.
    """

    def __init__(self, window: int = _CONTINUED_IDS) -> None:
        self._pending: dict[str, set[str]] = {}  # workflow -> continuation ids not yet continued
        self._continued: set[str] = set()
        self._order: deque[str] = deque()
        self._window = window

    def waiting(self, workflow_id: str) -> bool:
        """Whether the workflow waits for an answer (a ``task_waiting`` not yet continued)."""
        return bool(self._pending.get(workflow_id))

    def repeated(self, frame: Frame) -> bool:
        """Whether ``frame`` is a ``task_continued`` already seen (same ``continuation_id``)."""
        continuation = frame.get("continuation_id")
        return (
            frame.get("type") == TASK_CONTINUED
            and continuation is not None
            and (str(continuation) in self._continued)
        )

    def see(self, frame: Frame) -> str | None:
        """Take ``frame`` into account; the id of the workflow it ends, or None."""
        kind, workflow = frame.get("type"), workflow_of(frame)
        if workflow is None:
            return None
        continuation = frame.get("continuation_id")
        if kind == TASK_WAITING:
            key = f"task:{frame.get('task_id')}" if continuation is None else str(continuation)
            if key not in self._continued:
                self._pending.setdefault(workflow, set()).add(key)
        elif kind == TASK_CONTINUED:
            pending = self._pending.get(workflow, set())
            if continuation is None:  # not from this protocol: whatever waited is settled
                pending.clear()
            else:
                self._remember(str(continuation))
                pending.discard(str(continuation))
            if not pending:
                self._pending.pop(workflow, None)
        elif kind in TERMINAL_EVENT_TYPES and (
            frame.get("workflow_id") or kind == EventType.TASK_CANCELLED or not self.waiting(workflow)
        ):
            self._pending.pop(workflow, None)
            return workflow
        return None

    def _remember(self, continuation: str) -> None:
        if continuation in self._continued:
            return
        self._continued.add(continuation)
        self._order.append(continuation)
        if len(self._order) > self._window:
            self._continued.discard(self._order.popleft())


class WorkflowEnd:
    """A ``Client.wait_for`` match for the end of workflow ``workflow_id``.

    Matches the workflow's terminal event, or the reply to a subscription to
    the workflow's id whose ``state`` already holds a final event (it ended
    before the subscription); :meth:`event` gives the terminal event of either.
    """

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self._workflows = Workflows()

    def __call__(self, frame: Frame) -> bool:
        if frame.get("type") == ReplyType.SUBSCRIPTION_CONFIRMED:
            return frame.get("task_id") == self.workflow_id and self._final(frame) is not None
        return self._workflows.see(frame) == self.workflow_id

    def event(self, frame: Frame) -> Frame:
        """The terminal event behind a frame this matched."""
        return self._final(frame) or frame

    @staticmethod
    def _final(frame: Frame) -> Frame | None:
        state = frame.get("state")
        final = state.get("final") if isinstance(state, dict) else None
        if isinstance(final, dict) and final.get("type") in TERMINAL_EVENT_TYPES:
            return final
        return None
