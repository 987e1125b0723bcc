"""A workflow as issue 13's contract has it, published through the suite's real
Redis (and so the real server) for the clients' tests, before a worker can run one.

The first task ``W`` reports progress and asks a real question (a ``Publisher``'s
``notify_user``: stored in Redis, answered by a client through the server), then
says ``task_waiting`` instead of ending. Once the answer is in, ``task_continued``
comes twice (the server sends it at least once) and the continuation ``C`` runs
under its own id, every event carrying ``workflow_id`` ``W`` and
``parent_task_id`` ``W``, and succeeds with a result made of the answer.
Events go to the owner, so a connection following the owner sees them all.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import redis

from celery_ws import Publisher, Settings
from celery_ws.exceptions import TaskCancelled
from celery_ws.protocol import TaskStepResult, UserConfirmation, event
from tests.helpers import seconds

__all__ = ["QUESTION", "Workflow"]

QUESTION = "Write the 2 rows?"


class Workflow:
    def __init__(self, settings: Settings, user: str, *, answer_timeout: float = seconds(30)) -> None:
        self.settings = settings
        self.user = user
        self.answer_timeout = answer_timeout
        tag = uuid.uuid4().hex[:12]
        self.id = f"wf-{tag}"  # the first task's id: the workflow's
        self.continuation = f"cont-{tag}"  # the continuation's Celery id
        self.continuation_id = self.continuation  # as the server names it
        self.callback_id: str | None = None
        self.answer: UserConfirmation | None = None
        self.cancelled = False
        self._sent = False
        self._waiting = threading.Event()  # task_waiting is out: the answer may continue the workflow
        self._publisher = Publisher(settings=settings)  # this thread's
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._ask_then_continue, name=f"workflow-{tag}", daemon=True)

    def emit(self, type_: str, task_id: str, **fields: Any) -> None:
        self._publisher.emit(event(type_, task_id=task_id, user_id=self.user, **fields))

    def send(self) -> Workflow:
        """The first task is sent (it exists, and has its owner, from here on)."""
        if not self._sent:
            self._sent = True
            self.emit("task_sent", self.id, name="tests.import_rows")
        return self

    def start(self) -> Workflow:
        """The first task runs and asks; returns once it says ``task_waiting``."""
        self.send()
        self.emit("task_started", self.id, name="tests.import_rows")
        self.emit("task_progress", self.id, current=1, total=2, progress=50.0, message="Reading rows")
        self._thread.start()
        self.callback_id = self._asked()
        self.emit(
            "task_waiting",
            self.id,
            workflow_id=self.id,
            callback_id=self.callback_id,
            continuation_id=self.continuation_id,
        )
        self._waiting.set()
        return self

    def _asked(self) -> str:
        """The question's callback id, once it is stored as the task's latest step."""
        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            deadline = time.monotonic() + seconds(10)
            while time.monotonic() < deadline:
                raw = client.hget(self.settings.keys.home(self.user).task(self.id), "state:step")
                if raw:
                    return str(json.loads(raw)["callback_id"])
                if not self._thread.is_alive():
                    break
                time.sleep(0.02)
        finally:
            client.close()
        raise AssertionError(f"the question was not asked: {self._error!r}")

    def _ask_then_continue(self) -> None:
        publisher = Publisher(settings=self.settings)  # notify_user blocks this thread
        try:
            step = TaskStepResult(step="validation", message=QUESTION, status="waiting", result={"rows": 2})
            self.answer = publisher.notify_user(step, self.user, self.id, timeout=self.answer_timeout)
        except TaskCancelled:
            self.cancelled = True  # no continuation
            return
        except BaseException as exc:
            self._error = exc
            return
        finally:
            publisher.close()
        # the server continues once the answer is in, which the task said it waits for
        if not self._waiting.wait(seconds(10)):
            self._error = AssertionError("task_waiting was never sent")
            return
        continued = {
            "workflow_id": self.id,
            "continuation_id": self.continuation_id,
            "callback_id": self.callback_id,
        }
        self.emit("task_continued", self.id, **continued)
        self.emit("task_continued", self.id, **continued)
        self.continue_with(self.answer)

    def continue_with(self, answer: UserConfirmation) -> None:
        """The continuation's events: it runs, reports, and succeeds."""
        ours = {"workflow_id": self.id, "parent_task_id": self.id}
        cont = self.continuation
        self.emit("task_sent", cont, name="tests.write_rows", **ours)
        self.emit("task_started", cont, name="tests.write_rows", **ours)
        for i in (1, 2):
            self.emit("task_progress", cont, current=i, total=2, progress=50.0 * i, message="Writing", **ours)
        self.emit("task_step_result", cont, step="write", message="2 rows written", status="done", **ours)
        result = {"written": 2, "proceed": answer.proceed, "feedback": answer.feedback}
        self.emit("task_succeeded", cont, result=result, **ours)

    def join(self, timeout: float = seconds(20)) -> None:
        """Wait for the asking thread's end (if it started); raise what went wrong in it."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError("the workflow's question was never answered")
        self._publisher.close()
        if self._error is not None:
            raise self._error
