"""The synchronous publisher: workers, web apps, scripts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Unpack

import redis

from ..connections import sync_client
from ..deferred import Continuation
from ..protocol import TaskStepResult, UserConfirmation
from ..settings import Settings
from ..storage import EmitResult
from .core import Announce, Commands, Core, Effect, Links, Pause, Pop, Run, Steps, load_settings
from .question import ConfirmOptions, Outgoing
from .workflows import Cancellation, cancel, defer

__all__ = ["Publisher"]

T = TypeVar("T")


class Publisher:
    """Synchronous publisher; safe to share between threads, fork-safe.

    Args:
        announce: how to store the events that close a question
            (``confirmation_answered``/``confirmation_expired``); by default a
            write before ``notify_user`` returns. A worker queues them on its
            emitter instead, without waking its writer, so ``confirm_step()``
            returns as soon as the answer is in; they are stored within
            ``progress_interval``, and before whatever the task emits next.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        announce: Callable[[list[Outgoing]], None] | None = None,
        links: Links | None = None,
    ) -> None:
        self.settings = load_settings(redis_url, settings)
        self._core = Core(self.settings, links)
        self._announce = announce or self._store
        self.redis = sync_client(self.settings.redis_url)
        self._blocking = sync_client(self.settings.redis_url, blocking=True)

    def close(self) -> None:
        self.redis.close()
        self._blocking.close()

    def emit(self, event: dict[str, Any], *, callback_id: str | None = None) -> EmitResult:
        return self._run(self._core.emit(event, callback_id))

    def emit_many(self, events: Iterable[dict[str, Any] | Outgoing]) -> list[EmitResult]:
        """Store many events in one round trip, in order."""
        return self._run(self._core.emit_many(events))

    def broadcast(self, message: dict[str, Any]) -> str | None:
        """Send to every connection; returns the event id."""
        return self._run(self._core.send(message, None))

    def send_to_user(self, user_id: str, message: dict[str, Any]) -> str | None:
        return self._run(self._core.send(message, user_id))

    def send_to_task(self, task_id: str, message: dict[str, Any]) -> str | None:
        """Send to the task's owner and to whoever watches the task."""
        return self._run(self._core.send_to_task(task_id, message))

    def send_with_ack(self, user_id: str, message: dict[str, Any], timeout: float = 5.0) -> bool:
        """Send to ``user_id`` and wait until one of their connections, on any
        replica, acknowledges it: True, or False after ``timeout``."""
        return self._run(self._core.send_with_ack(user_id, message, timeout))

    def owner_of(self, task_id: str) -> str | None:
        return self._run(self._core.owner_of(task_id))

    def is_cancelled(self, task_id: str) -> bool:
        return self._run(self._core.is_cancelled(task_id))

    def cancelled_by(self, task_id: str) -> str | None:
        """Who cancelled the task (None: nobody, or an anonymous open-mode client)."""
        return self._run(self._core.cancelled_by(task_id))

    def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str | None,
        step: int | None = None,
        **options: Unpack[ConfirmOptions],
    ) -> UserConfirmation:
        """Show ``step_result`` to ``user_id`` and block until they answer.

        Args:
            options: ``timeout``, ``default``, ``assignees``, ``answer_model``:
                see :class:`~celery_ws.publisher.ConfirmOptions`.

        Raises:
            ConfirmationTimeout: nobody answered within ``timeout`` and no
                ``default`` was given.
            TaskCancelled: the task was cancelled while waiting.
        """
        return self._run(self._core.notify_user(step_result, user_id, task_id, step, options))

    def defer(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str,
        step: int | None = None,
        *,
        continuation: Continuation,
        **options: Unpack[ConfirmOptions],
    ) -> str:
        """Store a deferred question and show it to ``user_id``; returns its callback id.

        The storage half of :meth:`ProgressTask.ask <celery_ws.ProgressTask.ask>`:
        once the person answers (or ``timeout`` passes), a ``celery-ws serve
        --app`` replica sends ``continuation``.

        Raises:
            ContinuationUnavailable: no server that can send continuations is running.
        """
        return self._run(defer(self._core, step_result, user_id, task_id, step, continuation, options))

    def cancel(self, task_id: str, by: str | None = None, *, owner_only: bool = False) -> Cancellation:
        """Cancel a task from any process, as a client's ``cancel`` does: a running
        task stops at its next ``progress()``, a blocking question wakes with
        TaskCancelled, a deferred question closes and sends no continuation (the
        whole workflow is cancelled), and the owner's clients get ``task_cancelled``
        with ``requested_by=by``. Revoking needs the Celery app: the result lists
        the ids to pass to ``app.control.revoke``.

        Args:
            by: who cancels, as recorded (``requested_by``, ``cancelled_by()``).
            owner_only: refuse (``forbidden``) unless ``by`` owns the task.
        """
        return self._run(cancel(self._core, task_id, by, owner_only=owner_only))

    def _store(self, outgoing: list[Outgoing]) -> None:
        self._run(self._core.announce(outgoing))

    def _run(self, steps: Steps[T]) -> T:
        run = Run(steps)
        while run.effect is not None:
            try:
                reply = self._perform(run.effect)
            except redis.RedisError as exc:
                run.throw(exc)
            else:
                run.send(reply)
        return run.result

    def _perform(self, effect: Effect) -> Any:
        """All the I/O a Publisher does."""
        match effect:
            case Commands(queue, transaction, raise_on_error):
                with self.redis.pipeline(transaction=transaction) as pipe:
                    queue(pipe)
                    return pipe.execute(raise_on_error=raise_on_error)
            case Pop(key, timeout):
                return self._blocking.blpop([key], timeout=timeout)
            case Pause(seconds):
                time.sleep(seconds)
            case Announce(outgoing):
                self._announce(outgoing)
        return None
