"""The per-process event writer.

Task code must never wait on Redis to report progress, and must never lose a
step result because Redis blinked. So events go into a bounded in-memory queue
that one background thread writes to Redis in pipelined batches, retrying with
backoff while Redis is away. Progress is coalesced per task: ``progress()``
only records the latest value, and the thread writes it at most once per
``progress_interval``; any other event of the same task writes the pending
progress first, so order is kept and the last value is never lost.

Each event carries this process's sequence number; ``emit.lua`` drops numbers
it has stored already, so a batch retried after an ambiguous failure is stored
once. The thread learns from each write whether the task was cancelled, which
lets ``progress()`` notice a cancel without a Redis round trip.

The same thread sends a ``heartbeat`` for every task running in this process
each ``heartbeat_interval``. Each beat renews the task's lease in Redis; when a
worker dies without a word (SIGKILL, power loss), the lease runs out and a
server reports the task lost.

Trouble is counted, not logged event by event: a full buffer drops every
event that follows, and a Redis outage fails every retry, so one line each
would bury the worker's log. The thread logs one WARNING with what it dropped
and how often Redis failed since its last report, at most once per
``report_interval``; :attr:`Emitter.dropped` and :attr:`Emitter.redis_errors`
hold the totals.

One emitter exists per process: after a prefork fork the child builds its own
(threads and sockets do not survive ``fork``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import NoScriptError

from ..connections import sync_client
from ..protocol import event, progress_event
from ..settings import Settings
from ..storage import EMIT, EmitResult, emit_call, owner_pointers, pipelined

__all__ = ["Emitter"]

logger = logging.getLogger(__name__)

_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
_BATCH = 500

#: missed heartbeats after which a task counts as lost
LOST_AFTER_BEATS = 3

#: seconds between two reports of dropped events and Redis errors, at least
REPORT_INTERVAL = 60.0

#: records a task's latest progress; returns whether the task was cancelled
Reporter = Callable[[float, "float | None", "str | None"], bool]

# (event, callback_id, seq, lease seconds or None, route_by_task)
_Entry = tuple[dict[str, Any], "str | None", int, "float | None", bool]


class Emitter:
    def __init__(self, settings: Settings, *, report_interval: float = REPORT_INTERVAL) -> None:
        self.settings = settings
        self.pid = os.getpid()
        #: events lost since the emitter started: the buffer was full, or Redis refused them
        self.dropped = 0
        #: failed writes since the emitter started; each is retried with backoff, nothing is lost
        self.redis_errors = 0
        self._report_interval = report_interval
        self._reported = (0, 0)  # (dropped, redis_errors) at the last report
        self._next_report = 0.0  # the first trouble is reported at once
        self._last_error: Exception | None = None
        self._redis = sync_client(settings.redis_url)
        self._script = self._redis.register_script(EMIT)
        self._producer = uuid.uuid4().hex
        self._seq = 0
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._progress: dict[str, tuple[str | None, float, float | None, str | None, float]] = {}
        self._next_progress = 0.0
        self._in_flight = 0
        self._cancelled: set[str] = set()
        self._running: dict[str, str] = {}
        #: workflow_id/parent_task_id of the continuations running here, for their events
        self._links: dict[str, dict[str, str]] = {}
        self._lease = LOST_AFTER_BEATS * settings.heartbeat_interval
        self._coalesce = settings.progress_interval > 0
        self._next_beat = time.monotonic() + settings.heartbeat_interval
        self._thread = threading.Thread(target=self._run, name="celery-ws-emitter", daemon=True)
        self._thread.start()

    # -- called from task code ------------------------------------------------------

    def reporter(self, task_id: str, user_id: str | None) -> Reporter:
        """``progress()`` for one task run: records the latest value and returns
        whether the task was cancelled.

        Built once per run, so a call is one dict store and one set lookup. No
        lock: a dict store is atomic, and only the writer thread and :meth:`emit`
        (under the lock) take entries out. The writer looks every
        ``progress_interval`` while a task runs, so nothing needs waking here.
        """
        latest, cancelled, clock = self._progress, self._cancelled, time.time

        def report(current: float, total: float | None, message: str | None) -> bool:
            latest[task_id] = (user_id, current, total, message, clock())
            return task_id in cancelled

        if self._coalesce:
            return report

        def report_now(current: float, total: float | None, message: str | None) -> bool:
            was_cancelled = report(current, total, message)
            with self._cond:
                self._cond.notify()
            return was_cancelled

        return report_now

    def started(self, event: dict[str, Any], links: dict[str, str] | None = None) -> None:
        """Queue ``task_started`` and keep the task's lease alive until ``finished``.
        ``links``: a continuation's ``workflow_id``/``parent_task_id``, given to
        every event of the task until then."""
        with self._cond:
            self._running[event["task_id"]] = event["user_id"]
            if links:
                self._links[event["task_id"]] = links
        self.emit(event, lease=self._lease)

    def waiting(self, task_id: str) -> None:
        """The task asked a deferred question and is returning: no more heartbeats
        (``task_waiting`` gives its lease up, and no beat may come after it)."""
        with self._cond:
            self._running.pop(task_id, None)

    def finished(self, task_id: str) -> None:
        with self._cond:
            self._running.pop(task_id, None)
            self._links.pop(task_id, None)
        self._cancelled.discard(task_id)

    def links(self, task_id: str) -> dict[str, str] | None:
        """``workflow_id``/``parent_task_id`` of a continuation running here."""
        return self._links.get(task_id)

    def emit(
        self,
        event: dict[str, Any],
        *,
        callback_id: str | None = None,
        lease: float | None = None,
        route_by_task: bool = True,
        wake: bool = True,
    ) -> None:
        """Queue an event for Redis, after the task's pending progress
        (``route_by_task``: see :func:`~celery_ws.storage.emit_call`).

        ``wake=False``: no need to write it at once. While a task runs the writer
        looks every ``progress_interval`` anyway, and whatever the task emits
        next wakes it with this event in front; waking a thread costs the
        caller tens of microseconds (a question's closing events: the task
        goes on sooner). Otherwise the writer is woken all the same."""
        with self._cond:
            if len(self._queue) >= self.settings.emit_buffer:
                self.dropped += 1  # reported by the writer thread, which may be retrying
                return
            task_id = event.get("task_id")
            if task_id is not None and task_id in self._progress:
                self._queue.append(self._progress_entry(task_id))
            links = self._links.get(task_id) if task_id is not None and self._links else None
            if links is not None and "workflow_id" not in event:
                event.update(links)
            self._seq += 1
            self._queue.append((event, callback_id, self._seq, lease, route_by_task))
            if wake or not (self._coalesce and self._running):
                self._cond.notify()

    def is_cancelled(self, task_id: str) -> bool:
        return task_id in self._cancelled

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far, progress included, is in Redis."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._next_progress = 0.0
            self._cond.notify()
            while self._queue or self._progress or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- the writer thread ---------------------------------------------------------

    def _progress_entry(self, task_id: str) -> _Entry:
        user_id, current, total, message, timestamp = self._progress.pop(task_id)
        self._seq += 1
        progress = progress_event(task_id, user_id, current, total, message, timestamp)
        links = self._links.get(task_id) if self._links else None
        if links is not None:
            progress.update(links)
        return (
            progress,
            None,
            self._seq,
            None,
            True,
        )

    def _heartbeats(self) -> None:
        """Queue a heartbeat for each running task; called with the lock held."""
        interval = self.settings.heartbeat_interval
        for task_id, owner in self._running.items():
            self._seq += 1
            beat = event("heartbeat", task_id=task_id, user_id=owner, interval=interval)
            beat.update(self._links.get(task_id) or {})
            self._queue.append((beat, None, self._seq, self._lease, True))
        self._next_beat = time.monotonic() + interval

    def _next_batch(self) -> list[_Entry]:
        with self._cond:
            while True:
                if self._running and time.monotonic() >= self._next_beat:
                    self._heartbeats()
                if self._queue:
                    count = min(len(self._queue), _BATCH)
                    batch = [self._queue.popleft() for _ in range(count)]
                    break
                wait: float | None
                if self._progress:
                    wait = self._next_progress - time.monotonic()
                    if wait <= 0:
                        batch = [self._progress_entry(t) for t in list(self._progress)]
                        self._next_progress = time.monotonic() + self.settings.progress_interval
                        break
                else:
                    wait = self.settings.progress_interval if self._running and self._coalesce else None
                report_in = self._next_report - time.monotonic() if self._unreported() else None
                if report_in is not None and report_in <= 0:
                    batch = []  # nothing to write, but trouble to report
                    break
                beat_in = self._next_beat - time.monotonic() if self._running else None
                timeouts = [t for t in (wait, beat_in, report_in) if t is not None]
                self._cond.wait(min(timeouts) if timeouts else None)
            self._in_flight = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._write(batch)
            self._report()
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _unreported(self) -> bool:
        return (self.dropped, self.redis_errors) != self._reported

    def _report(self) -> None:
        """Log the events dropped and the Redis errors since the last report, if
        any, unless the last report is less than ``report_interval`` old: then
        the writer comes back when it is (see :meth:`_next_batch`)."""
        now = time.monotonic()
        if now < self._next_report or not self._unreported():
            return
        dropped, errors = self.dropped, self.redis_errors
        logger.warning(
            "celery-ws events since the last report: %d dropped (buffer of %d full, or refused by Redis), "
            "%d Redis errors (last: %s); since the start: %d dropped, %d Redis errors",
            dropped - self._reported[0],
            self.settings.emit_buffer,
            errors - self._reported[1],
            self._last_error or "none",
            dropped,
            errors,
        )
        self._reported = (dropped, errors)
        self._next_report = now + self._report_interval

    def _write(self, batch: list[_Entry]) -> None:
        backoff = _BACKOFF_START
        while True:
            try:
                with self._redis.pipeline(transaction=False) as pipe:
                    pipelined(
                        pipe,
                        self._script,
                        (
                            emit_call(
                                self.settings,
                                entry,
                                callback_id=callback_id,
                                producer=self._producer,
                                seq=seq,
                                lease=lease,
                                route_by_task=route_by_task,
                            )
                            for entry, callback_id, seq, lease, route_by_task in batch
                        ),
                        pointers=owner_pointers(
                            self.settings, (entry for entry, *_, by_task in batch if by_task)
                        ),
                    )
                    replies = pipe.execute()[: len(batch)]
            except NoScriptError:
                self._script.sha = self._redis.script_load(EMIT)
                continue
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.redis_errors += 1
                self._last_error = exc
                self._report()
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            except Exception:  # a bug or a misconfigured Redis: never kill the thread
                logger.exception("could not store %d events; dropped", len(batch))
                with self._cond:
                    self.dropped += len(batch)
                return
            for (entry, *_), reply in zip(batch, replies, strict=True):
                if EmitResult.from_reply(reply).cancelled and entry.get("task_id"):
                    self._cancelled.add(entry["task_id"])
            return
