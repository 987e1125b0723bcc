"""Answering questions from test code, as a person would through a server.

A test that starts a task asking ``confirm_step()`` (or ``ask()``) needs
someone to answer. :func:`answer` answers a task's question once it is open;
:func:`auto_answer` answers every question opened while it is active. Both
write the answer to Redis exactly as a server replica does (``answer.lua``:
first answer wins, typed answers checked against the form), so the task
cannot tell a test from a person, and neither needs a server or a client.

Why from another thread: under ``task_always_eager`` the task runs inside
``delay()``, in the test's own thread, and ``confirm_step()`` blocks that
thread until the answer comes. So the answer must be arranged *before* the
task runs: ``with auto_answer(...):`` around the call, or ``answer()`` from a
thread started first. With a real worker either works, before or after the
task asks.

:func:`cancel_questions` is what the pytest plugin runs when a test ends: the
questions it left open are cancelled, so a worker blocked in
``confirm_step()`` wakes (``TaskCancelled``) instead of holding the process
until the question's timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import redis
from celery import Celery

from ..connections import sync_client
from ..exceptions import ConfirmationError, ProtocolError
from ..forms import check_answer
from ..keys import Home
from ..protocol import UserConfirmation, loads
from ..publisher import Publisher
from ..settings import Settings
from ..storage import ANSWER, answer_call, answer_payload, answer_reply, text

__all__ = ["AutoAnswer", "answer", "auto_answer", "cancel_questions", "open_questions"]

#: seconds between two looks for a question (a test helper may poll: Redis is local)
_POLL = 0.02
#: who is named as cancelling the questions a test left open
CANCELLED_BY = "pytest"


def settings_for(settings: Settings | None = None, app: Celery | None = None) -> Settings:
    """The given settings; else those of ``app`` (its ``CeleryWS`` when attached,
    else its ``app.conf``); else those of Celery's current app."""
    if settings is not None:
        return settings
    from celery import current_app

    from ..worker.integration import CeleryWS

    app = app if app is not None else current_app._get_current_object()
    ws = CeleryWS.for_app(app)
    return ws.settings if ws is not None else Settings.load(app.conf)


def open_questions(settings: Settings) -> set[str]:
    """The callback ids of every question open now, of any task or user."""
    client = sync_client(settings.redis_url)
    try:
        return set(_pending(client, settings))
    finally:
        client.close()


def answer(
    task_id: str,
    proceed: bool = True,
    *,
    data: Any = None,
    feedback: str | None = None,
    by: str | None = None,
    timeout: float = 10.0,
    settings: Settings | None = None,
    app: Celery | None = None,
) -> UserConfirmation:
    """Answer ``task_id``'s open question, waiting up to ``timeout`` seconds for
    it to be asked. A workflow's first task id also finds the questions of its
    continuations.

    Args:
        data: the answer to a typed question (``answer_model``); checked
            against its form as the server checks it.
        by: who answers (a user among the question's assignees); its owner
            by default.
        settings: where the question lives; else ``app``'s.
        app: where the question lives; Celery's current app by default.

    Returns:
        The answer as the task receives it (``data`` as sent, not yet a model).

    Raises:
        TimeoutError: no question of the task was open within ``timeout``.
        ProtocolError: ``invalid_answer``, naming the ``fields`` that do not fit.
        ConfirmationError: the question closed first (answered, expired, cancelled).
    """
    settings = settings_for(settings, app)
    client = sync_client(settings.redis_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            waiting = _members(client, _task_home(client, settings, task_id).task_pending(task_id), last=0)
            if waiting:
                return _answer(client, settings, waiting[0], proceed, data, feedback, by)
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} asked no question within {timeout:g} s")
            time.sleep(_POLL)
    finally:
        client.close()


class AutoAnswer:
    """Answers every question opened while it is active (see :func:`auto_answer`).

    ``answers`` lists what it answered, in order; a refusal (say, ``data`` that
    does not fit a typed question) is raised when the block ends.
    """

    def __init__(
        self,
        settings: Settings,
        proceed: bool,
        *,
        data: Any,
        feedback: str | None,
        by: str | None,
        task_id: str | None,
    ) -> None:
        self.settings = settings
        self.reply = (proceed, data, feedback, by)
        self.task_id = task_id
        self.answers: list[UserConfirmation] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-ws-auto-answer", daemon=True)
        self._seen: set[str] = set()

    def __enter__(self) -> AutoAnswer:
        if self.task_id is None:  # older questions are someone else's
            self._seen = open_questions(self.settings)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        if exc is None and self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        client = sync_client(self.settings.redis_url)
        try:
            while not self._stop.wait(_POLL):
                for callback_id in _pending(client, self.settings):
                    self._take(client, callback_id)
        finally:
            client.close()

    def _take(self, client: redis.Redis, callback_id: str) -> None:
        if callback_id in self._seen:
            return
        self._seen.add(callback_id)
        if self.task_id is not None:
            asked_by = client.hmget(_confirm(self.settings, callback_id), "task_id", "workflow_id")
            if self.task_id not in {text(value) for value in asked_by}:
                return
        proceed, data, feedback, by = self.reply
        try:
            self.answers.append(_answer(client, self.settings, callback_id, proceed, data, feedback, by))
        except (ConfirmationError, ProtocolError, redis.RedisError) as exc:
            self.errors.append(exc)


def auto_answer(
    proceed: bool = True,
    *,
    data: Any = None,
    feedback: str | None = None,
    by: str | None = None,
    task_id: str | None = None,
    settings: Settings | None = None,
    app: Celery | None = None,
) -> AutoAnswer:
    """Answer every question opened inside the ``with`` block, or with
    ``task_id`` every question of that task and its continuations (also one
    open already), from a thread of its own; the way to answer a task run
    under ``task_always_eager``::

        with auto_answer(data={"rows": 12}) as answering:
            result = import_rows.delay_for("alice", "orders.csv")
        assert answering.answers[0].data == {"rows": 12}
    """
    return AutoAnswer(
        settings_for(settings, app), proceed, data=data, feedback=feedback, by=by, task_id=task_id
    )


def cancel_questions(settings: Settings, callback_ids: Iterable[str]) -> list[str]:
    """Cancel the tasks (whole workflows) whose questions these are, when still
    open: a ``confirm_step()`` waiting on one wakes with ``TaskCancelled``.
    Returns the ids of the tasks cancelled."""
    client = sync_client(settings.redis_url)
    publisher = Publisher(settings=settings)
    cancelled: list[str] = []
    try:
        for callback_id in callback_ids:
            state, task_id = (
                text(value) for value in client.hmget(_confirm(settings, callback_id), "state", "task_id")
            )
            still_open = state == "pending" and task_id and task_id not in cancelled
            if still_open and publisher.cancel(str(task_id), CANCELLED_BY).outcome == "ok":
                cancelled.append(str(task_id))
    finally:
        publisher.close()
        client.close()
    return cancelled


def _pending(client: redis.Redis, settings: Settings) -> list[str]:
    """Every open question's callback id, home by home."""
    return [cid for home in settings.keys.all_homes() for cid in _members(client, home.pending)]


def _confirm(settings: Settings, callback_id: str) -> str:
    return settings.keys.callback_home(callback_id).confirm(callback_id)


def _task_home(client: redis.Redis, settings: Settings, task_id: str) -> Home:
    """A task's home from its id (on a cluster, through its owner pointer)."""
    keys = settings.keys
    owner = text(cast("bytes | None", client.get(keys.owner(task_id)))) if keys.clustered else None
    return keys.home(owner or task_id)


def _members(client: redis.Redis, key: str, last: int = -1) -> list[str]:
    """A sorted set's members, first to ``last``, as text (lowest score first)."""
    return [str(text(member)) for member in cast("list[bytes]", client.zrange(key, 0, last))]


def _answer(
    client: redis.Redis,
    settings: Settings,
    callback_id: str,
    proceed: bool,
    data: Any,
    feedback: str | None,
    by: str | None,
) -> UserConfirmation:
    """What a server replica does with a ``confirm`` frame, minus the socket."""
    owner, assignees = (text(v) for v in client.hmget(_confirm(settings, callback_id), "owner", "assignees"))
    allowed = loads(assignees) if assignees else []
    answered_by = by or (owner if owner in allowed or not allowed else allowed[0])
    payload = answer_payload(proceed, feedback, answered_by, data)
    script = client.register_script(ANSWER)
    keys, args = answer_call(settings, callback_id, answered_by, payload, checked=not proceed)
    outcome, details = answer_reply(script(keys=keys, args=args))
    if outcome == "check":
        check_answer(loads(details[0] or "{}"), data, callback_id=callback_id)
        keys, args = answer_call(settings, callback_id, answered_by, payload)
        outcome, details = answer_reply(script(keys=keys, args=args))
    if outcome != "ok":
        raise ConfirmationError(f"question {callback_id} was not answered: {outcome}")
    return UserConfirmation.model_validate({**loads(payload), "callback_id": callback_id})
