"""Everything a publisher does, with no I/O: which Redis commands, in what
order, what their replies mean, when to retry.

Like websockets' sans-I/O ``Protocol``, which its asyncio and sync layers feed
bytes, each sequence here is a generator. It yields an *effect* (send these
commands in one round trip, block on this list, pause, announce these events),
receives the effect's reply (or has the Redis error it raised thrown in), and
returns its result or raises. :class:`~celery_ws.Publisher` and
:class:`~celery_ws.AsyncPublisher` only carry effects out, through :class:`Run`,
so a retry, a deadline or a pipelined batch is written once and both behave
the same.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeAlias, TypeVar

import redis
from redis.exceptions import NoScriptError

from ..keys import Home
from ..protocol import TaskStepResult, UserConfirmation, message_event
from ..settings import Settings
from ..storage import (
    EMIT,
    EXPIRE,
    Call,
    EmitResult,
    Pointers,
    emit_call,
    expire_call,
    owner_pointers,
    pipelined,
    text,
)
from .question import ConfirmOptions, Outgoing, Question

if TYPE_CHECKING:
    import redis.asyncio.client
    import redis.client

__all__ = [
    "Announce",
    "Commands",
    "Core",
    "Effect",
    "Links",
    "Pause",
    "Pipe",
    "Pop",
    "Run",
    "Steps",
    "load_settings",
]

T = TypeVar("T")

#: a pipeline of either publisher's client: sequences only queue commands on it
Pipe: TypeAlias = "redis.client.Pipeline | redis.asyncio.client.Pipeline"
#: ``workflow_id``/``parent_task_id`` of a task's events, when it continues another
Links = Callable[[str], "dict[str, str] | None"]

_MIN_BLOCK = 0.01  # BLPOP treats 0 as "forever"; never ask for less than this
_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
_CLOSE_GRACE = 30.0  # how long past its deadline a wait keeps trying to record the timeout


# -- effects: what a sequence asks its publisher to do -----------------------------------


@dataclass(frozen=True, slots=True)
class Commands:
    """Queue commands on a pipeline with ``queue`` and send them in one round
    trip (in MULTI/EXEC when ``transaction``); the reply is their replies, in
    order, with each error in its place unless ``raise_on_error``."""

    queue: Callable[[Pipe], object]
    transaction: bool = False
    raise_on_error: bool = True


@dataclass(frozen=True, slots=True)
class Pop:
    """BLPOP ``key`` on the connection without a socket timeout; the reply is
    ``(key, value)``, or None after ``timeout`` seconds."""

    key: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep ``seconds``: backing off while Redis is unreachable."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Announce:
    """Hand the events that close a question to the publisher's ``announce``."""

    outgoing: list[Outgoing]


Effect = Commands | Pop | Pause | Announce
Steps = Generator[Effect, Any, T]


class Run(Generic[T]):
    """A sequence being carried out. Do :attr:`effect`, report with :meth:`send`
    (its reply) or :meth:`throw` (the Redis error it raised), until :attr:`effect`
    is None and :attr:`result` is set. What the sequence raises (a timeout, a
    cancelled task, a Redis error it does not retry) comes out of those calls."""

    result: T

    def __init__(self, steps: Steps[T]) -> None:
        self._steps = steps
        self.effect: Effect | None = None
        self._advance(steps.send, None)

    def send(self, reply: Any) -> None:
        self._advance(self._steps.send, reply)

    def throw(self, error: redis.RedisError) -> None:
        self._advance(self._steps.throw, error)

    def _advance(self, resume: Callable[[Any], Effect], value: Any) -> None:
        try:
            self.effect = resume(value)
        except StopIteration as done:
            self.effect, self.result = None, done.value


# -- building blocks ---------------------------------------------------------------------


class _Script(NamedTuple):
    """A Lua script called by its SHA1, as redis-py's ``Script`` is, minus its client."""

    source: str
    sha: str


def _script(source: str) -> _Script:
    return _Script(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


_EMIT = _script(EMIT)
_EXPIRE = _script(EXPIRE)


def _scripted(script: _Script, calls: Iterable[Call], pointers: Pointers = ()) -> Steps[list[Any]]:
    """``script`` once per call, all in one round trip with the owner
    ``pointers`` (see :func:`~celery_ws.storage.pipelined`); the calls' replies.
    ``calls`` may be made as they are queued: a sync client sends the first
    while the next are made (``pipelines.py``)."""
    made: list[Call] = []

    def keep(calls: Iterable[Call]) -> Iterator[Call]:
        for call in calls:
            made.append(call)
            yield call

    replies: list[Any] = yield Commands(
        lambda pipe: pipelined(pipe, script, keep(calls), pointers=pointers), raise_on_error=False
    )
    # a Redis that restarted, flushed its scripts or was promoted (on a cluster,
    # maybe one node of several) did not run these: run them again by source
    unknown = [n for n, reply in enumerate(replies[: len(made)]) if isinstance(reply, NoScriptError)]
    if unknown:
        again = [made[n] for n in unknown]
        retried = yield Commands(lambda pipe: pipelined(pipe, script, again, by_source=True))
        for n, reply in zip(unknown, retried, strict=True):
            replies[n] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[: len(made)]


def _command(queue: Callable[[Pipe], object]) -> Steps[Any]:
    (reply,) = yield Commands(queue)
    return reply


def _announce(outgoing: list[Outgoing]) -> Steps[None]:
    yield Announce(outgoing)


def _retrying(question: Question, start: Callable[[], Steps[T]], *, past_deadline: bool = False) -> Steps[T]:
    """``start()``'s sequence, started again with backoff while Redis is unreachable
    and the question's deadline (plus a grace period to close it) has not passed."""
    backoff = _BACKOFF_START
    while True:
        try:
            return (yield from start())
        except _REDIS_DOWN:
            if question.remaining < (-_CLOSE_GRACE if past_deadline else 0):
                raise
            yield Pause(backoff)
            backoff = min(backoff * 2, _BACKOFF_CAP)


def load_settings(redis_url: str | None, settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    return Settings.load(redis_url=redis_url) if redis_url else Settings.load()


# -- the sequences -----------------------------------------------------------------------


class Core:
    """The sequence behind each public method of the publishers (``send`` serves
    ``broadcast`` and ``send_to_user``); a publisher runs one per call."""

    def __init__(self, settings: Settings, links: Links | None = None) -> None:
        self.settings = settings
        self._links = links

    def links_of(self, task_id: str | None) -> dict[str, str]:
        """``workflow_id``/``parent_task_id`` of a task that continues another, as
        the publisher's ``links`` knows it (a worker: for the runs of its process)."""
        return (self._links(task_id) or {}) if self._links is not None and task_id else {}

    # -- events

    def announce(self, outgoing: list[Outgoing]) -> Steps[list[EmitResult]]:
        """Store events in one round trip, in order: what a publisher announces
        with unless it was given its own ``announce``. An event of a task that
        continues another gets its ``workflow_id`` and ``parent_task_id``."""
        if self._links is not None:
            for out in outgoing:
                if "workflow_id" not in out.event:
                    out.event.update(self.links_of(out.event.get("task_id")))
        replies = yield from _scripted(
            _EMIT,
            (
                emit_call(
                    self.settings, out.event, route_by_task=out.route_by_task, callback_id=out.callback_id
                )
                for out in outgoing
            ),
            owner_pointers(self.settings, [out.event for out in outgoing if out.route_by_task]),
        )
        return [EmitResult.from_reply(reply) for reply in replies]

    def emit(self, event: dict[str, Any], callback_id: str | None = None) -> Steps[EmitResult]:
        (result,) = yield from self.announce([Outgoing(event, callback_id=callback_id)])
        return result

    def emit_many(self, events: Iterable[dict[str, Any] | Outgoing]) -> Steps[list[EmitResult]]:
        return self.announce([item if isinstance(item, Outgoing) else Outgoing(item) for item in events])

    def send(
        self, message: dict[str, Any], user_id: str | None, task_id: str | None = None
    ) -> Steps[str | None]:
        """A message for ``user_id`` (everyone when None); its event id."""
        return (yield from self.emit(message_event(message, user_id=user_id, task_id=task_id))).id

    def send_to_task(self, task_id: str, message: dict[str, Any]) -> Steps[str | None]:
        owner = yield from self.owner_of(task_id)
        return (yield from self.send(message, owner, task_id))

    def send_with_ack(self, user_id: str, message: dict[str, Any], timeout: float) -> Steps[bool]:
        """The ack key is written before the message goes out, so a connection that
        acknowledges at once finds it; then block until one does, on any replica."""
        message_id = uuid.uuid4().hex
        keys = self.settings.keys
        yield from _command(lambda pipe: pipe.set(keys.ack(message_id), user_id, ex=int(timeout) + 60))
        yield from self.send({**message, "message_id": message_id, "requires_ack": True}, user_id)
        return (yield Pop(keys.ack_list(message_id), max(timeout, _MIN_BLOCK))) is not None

    # -- a task's state

    def _task_field(self, task_id: str, field: str) -> Steps[str | None]:
        home = yield from self.task_home(task_id)
        return text((yield from _command(lambda pipe: pipe.hget(home.task(task_id), field))))

    def task_home(self, task_id: str) -> Steps[Home]:
        """Where a task's keys are, from its id alone (on a cluster, through its
        owner pointer: ``keys.py``)."""
        keys = self.settings.keys
        owner = (yield from self._pointed_owner(task_id)) if keys.clustered else None
        return keys.home(owner or task_id)

    def _pointed_owner(self, task_id: str) -> Steps[str | None]:
        return text((yield from _command(lambda pipe: pipe.get(self.settings.keys.owner(task_id)))))

    def owner_of(self, task_id: str) -> Steps[str | None]:
        if self.settings.keys.clustered:
            return (yield from self._pointed_owner(task_id))
        return (yield from self._task_field(task_id, "owner"))

    def is_cancelled(self, task_id: str) -> Steps[bool]:
        return (yield from self._task_field(task_id, "cancel")) is not None

    def cancelled_by(self, task_id: str) -> Steps[str | None]:
        """None: nobody, or an anonymous open-mode client (stored as '')."""
        return (yield from self._task_field(task_id, "cancelled_by")) or None

    # -- questions

    def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str | None,
        step: int | None,
        options: ConfirmOptions,
    ) -> Steps[UserConfirmation]:
        """Ask, then wait. Both survive Redis restarts and failovers: the question and
        its answer live in Redis, so a wait that loses its connection reads what
        happened meanwhile and keeps its deadline."""
        question = Question(
            self.settings, step_result, user_id, task_id, step, options, links=self.links_of(task_id)
        )
        yield from _retrying(question, lambda: self._ask(question))
        while question.remaining > 0:
            try:
                popped = yield Pop(question.reply_key, max(question.remaining, _MIN_BLOCK))
            except _REDIS_DOWN:
                decided = yield from self._recheck(question)
            else:
                decided = None if popped is None else (yield from self._answered(question, popped[1]))
            if decided is not None:
                return decided
        return (yield from self._expire(question))

    def _ask(self, question: Question) -> Steps[None]:
        """Stored before announced, so an answer that comes at once finds it pending."""
        yield Commands(question.open, transaction=True)
        if question.others:
            yield Commands(question.index_elsewhere)
        yield from self.announce(question.requests())

    def _recheck(self, question: Question) -> Steps[UserConfirmation | None]:
        """Redis restarted or failed over: was the question answered, cancelled or
        closed meanwhile? None: it is still open."""
        state, answer = yield from _retrying(
            question, lambda: _command(lambda pipe: pipe.hmget(question.key, "state", "answer"))
        )
        return question.closed(text(state) or "unknown_callback", answer)

    def _answered(self, question: Question, raw: bytes) -> Steps[UserConfirmation]:
        answer = question.answered(raw)
        closing = question.answered_events(answer)
        yield from _retrying(question, lambda: _announce(closing), past_deadline=True)
        return answer

    def _expire(self, question: Question) -> Steps[UserConfirmation]:
        """Past the deadline: close the question, unless an answer or a cancel
        got there first (``expire.lua`` decides, atomically)."""
        call = expire_call(self.settings, question.callback_id)
        (reply,) = yield from _retrying(question, lambda: _scripted(_EXPIRE, [call]), past_deadline=True)
        state, *rest = reply
        if text(state) == "expired":
            yield Announce(question.expired_events())
        return question.closed(text(state) or "expired", rest[0] if rest else None) or question.timed_out()
