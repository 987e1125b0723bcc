"""The Redis operations only the server performs: answering, and finding the
confirmations a person has yet to answer (cancelling is the publishers')."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio
from redis.exceptions import NoScriptError

from ..keys import Home
from ..protocol import event_order, loads, with_id
from ..settings import Settings
from ..storage import ANSWER, AnswerRefusal, answer_call, answer_payload, answer_reply, text
from .redisconn import CommandLane

__all__ = ["AckOutcome", "Answered", "ServerStore", "due"]

#: What became of an ack: delivered to its sender, or why not (see :meth:`ServerStore.ack`).
AckOutcome = Literal["ok", "unknown", "forbidden"]


@dataclass(frozen=True, slots=True)
class Answered:
    """What became of an answer: ``ok``, or why it was refused."""

    outcome: Literal["ok"] | AnswerRefusal
    task_id: str | None = None
    owner: str | None = None
    asked_at: float | None = None
    #: a deferred question: its continuation is due (claimed by this replica when it can send it)
    deferred: bool = False


_ANSWER_SHA = hashlib.sha1(ANSWER.encode(), usedforsecurity=False).hexdigest()


class ServerStore:
    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        # a cluster client routes each answer to its home's node itself
        self._lane = None if settings.keys.clustered else CommandLane(client)

    async def close(self) -> None:
        if self._lane is not None:
            await self._lane.close()

    async def _answer(self, keys: list[str], args: list[Any]) -> Any:
        """``answer.lua`` through the lane: a blocked ``confirm_step()`` wakes
        once it has run, so this round trip is on the person's critical path."""
        if self._lane is None:
            try:
                return await self.redis.evalsha(_ANSWER_SHA, len(keys), *keys, *args)
            except NoScriptError:  # that node restarted or was promoted: nothing ran
                return await self.redis.eval(ANSWER, len(keys), *keys, *args)
        try:
            return await self._lane.call("EVALSHA", _ANSWER_SHA, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: nothing ran
            await self._lane.call("SCRIPT", "LOAD", ANSWER)
            return await self._lane.call("EVALSHA", _ANSWER_SHA, len(keys), *keys, *args)

    async def answer(
        self,
        callback_id: str,
        answered_by: str | None,
        proceed: bool,
        feedback: str | None,
        data: Any = None,
        *,
        check: Callable[[dict[str, Any]], None],
        claimer: str | None = None,
    ) -> Answered:
        """Take the first valid answer. A typed question's answer to proceed must
        fit its form: ``check(schema)`` raises when it does not, and then nothing
        is stored. An untyped question costs one round trip, a typed one two.
        ``claimer``: this replica's id when it sends continuations; it claims a
        deferred question's continuation with the answer."""
        payload = answer_payload(proceed, feedback, answered_by, data)
        keys, args = answer_call(
            self.settings, callback_id, answered_by, payload, checked=not proceed, claimer=claimer
        )
        outcome, details = answer_reply(await self._answer(keys, args))
        if outcome == "check":
            check(_json(details[0]))
            keys, args = answer_call(self.settings, callback_id, answered_by, payload, claimer=claimer)
            outcome, details = answer_reply(await self._answer(keys, args))
        if outcome == "check":
            raise RuntimeError("answer.lua asked to check an answer it was told is checked")
        if outcome != "ok":
            return Answered(outcome)
        task_id, owner, asked_at, mode = details
        return Answered(
            "ok", task_id or None, owner, float(asked_at) if asked_at else None, deferred=mode == "deferred"
        )

    def _task_home(self, task_id: str, owner: str | None) -> Home:
        """A task's home, ``owner`` being who follows it: a token's user may
        follow only their own tasks (with one home, anyone any)."""
        return self.settings.keys.home(owner or task_id)

    async def history(
        self, user_id: str | None, task_id: str | None, after: str, *, owner: str | None = None
    ) -> tuple[bool, list[tuple[bytes, bytes]]]:
        """Events after ``after`` from the user's and/or the task's history, in
        order, and whether that is all of them (False: the window was trimmed
        past ``after``, so some are gone)."""
        keys = self.settings.keys
        streams = ([keys.home(user_id).user_events(user_id)] if user_id else []) + (
            [self._task_home(task_id, owner).task_events(task_id)] if task_id else []
        )
        recovered = True
        found: dict[bytes, bytes] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrange(stream, count=1)
                pipe.xrange(stream, min=f"({after}", count=self.settings.history_max_events)
            replies = await pipe.execute()
        for oldest, entries in zip(replies[::2], replies[1::2], strict=True):
            if oldest and event_order(oldest[0][0]) > event_order(after):
                recovered = False
            for event_id, fields in entries:
                found[event_id] = with_id(event_id, fields[b"d"])
        return recovered, sorted(found.items(), key=lambda item: event_order(item[0]))

    async def task_links(self, home: Home, task_id: str) -> tuple[str | None, dict[str, str]]:
        """A task's owner, and the ``workflow_id``/``parent_task_id`` of its
        events when it continues another task."""
        owner, workflow, parent = await self.redis.hmget(home.task(task_id), "owner", "workflow", "parent")
        links = {"workflow_id": text(workflow) or "", "parent_task_id": text(parent) or ""}
        return text(owner), {k: v for k, v in links.items() if v}

    async def task_state(self, task_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """The task's latest progress, step result and final event, for a late viewer."""
        progress, step, final = await self.redis.hmget(
            self._task_home(task_id, owner).task(task_id), "state:progress", "state:step", "state:final"
        )
        return {"progress": _json(progress), "step_result": _json(step), "final": _json(final)}

    async def ack(self, message_id: str, user_id: str | None) -> AckOutcome:
        """``ok``, ``unknown`` or ``forbidden``.

        A named user is refused (``forbidden``) any message that was not sent to
        them, known or not, so acks cannot probe for message ids; only an
        anonymous open-mode connection hears ``unknown``.
        """
        keys = self.settings.keys
        recipient = text(await self.redis.get(keys.ack(message_id)))
        if user_id is not None and user_id != recipient:
            return "forbidden"
        if recipient is None:
            return "unknown"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.ack_list(message_id), user_id or "")
            pipe.expire(keys.ack_list(message_id), 60)
            await pipe.execute()
        return "ok"

    async def expired_leases(self, limit: int = 100) -> list[tuple[Home, str, float]]:
        """Running tasks whose heartbeats stopped: ``(home, task_id, when the lease ran out)``."""
        return await due(self.redis, self.settings, lambda home: home.running, limit)

    async def forget_lease(self, home: Home, task_id: str) -> None:
        await self.redis.zrem(home.running, task_id)

    async def pending_count(self) -> int:
        """Open confirmations across all replicas; forgets ones past their deadline."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for home in self.settings.keys.all_homes():
                pipe.zremrangebyscore(home.pending, "-inf", now)
                pipe.zcard(home.pending)
            replies = await pipe.execute()
        return sum(int(count) for count in replies[1::2])

    async def pending_requests(
        self, user_id: str | None, task_id: str | None, *, owner: str | None = None
    ) -> list[bytes]:
        """The stored request events of confirmations still open, oldest first
        (an assignee's index may name closed ones: skipped)."""
        keys = self.settings.keys
        now = time.time()
        sources = ([keys.home(user_id).user_pending(user_id)] if user_id else []) + (
            [self._task_home(task_id, owner).task_pending(task_id)] if task_id else []
        )
        callback_ids: dict[str, None] = {}
        for key in sources:
            for member in cast("list[bytes]", await self.redis.zrangebyscore(key, now, "+inf")):
                callback_ids[member.decode()] = None
        if not callback_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in callback_ids:
                pipe.hmget(keys.callback_home(cid).confirm(cid), "event_id", "event", "state")
            records = await pipe.execute()
        return [
            with_id(event_id, payload)
            for event_id, payload, state in records
            if event_id and payload and state == b"pending"
        ]


async def due(
    client: redis.asyncio.Redis, settings: Settings, index: Callable[[Home], str], limit: int
) -> list[tuple[Home, str, float]]:
    """Members of one index of every home (``index(home)`` names it) whose
    score has passed, up to ``limit`` per home, with their home and score:
    what a sweep takes in one round trip (spread over a cluster's nodes)."""
    homes, now = settings.keys.all_homes(), time.time()
    async with client.pipeline(transaction=False) as pipe:
        for home in homes:
            pipe.zrangebyscore(index(home), "-inf", now, start=0, num=limit, withscores=True)
        # redis-py types every reply shape at once; this client has no
        # decode_responses, and withscores pairs each member with its score
        replies = cast("list[list[tuple[bytes, float]]]", await pipe.execute())
    return [
        (home, member.decode(), float(score))
        for home, members in zip(homes, replies, strict=True)
        for member, score in members
    ]


def _json(raw: bytes | str | None) -> Any:
    return loads(raw) if raw else None
