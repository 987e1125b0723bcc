"""Every Redis key celery-ws reads or writes, in one place.

Layout (``cws`` is the configurable prefix; the braces are part of the key,
``<...>`` stands for an id)::

    cws:broadcasts                   stream  events for everyone (no user, no task)
    cws:firehose                     stream  open mode only: every event (ids come from here)
    cws:user:{<user>}:events         stream  one user's events, for resume
    cws:task:{<task>}:events         stream  one task's events, for resume and late viewers
    cws:task:{<task>}                hash    owner, final (terminal event type), cancel flag; in a
                                             workflow: its first task (workflow), the task it
                                             continues (parent), the next continuation (next)
    cws:user:{<user>}:pending        zset    the user's open confirmations, scored by deadline
    cws:task:{<task>}:pending        zset    the task's open confirmations, scored by deadline
    cws:running                      zset    running tasks, scored by when their lease runs out
    cws:pending                      zset    every open confirmation, scored by deadline
    cws:confirm:{<callback>}         hash    one confirmation: state, owner, assignees, deadline,
                                             the request event, the answer
    cws:confirm:{<callback>}:reply   list    the answer, pushed once; the worker BLPOPs it
    cws:ack:{<message>}              string  the user an acknowledged send went to
    cws:ack:{<message>}:acks         list    one entry per acknowledgement; the sender BLPOPs it
    cws:producer:{<producer>}        string  last sequence number stored from one worker process
    cws:deferred                     zset    deferred questions (``ask()``) whose continuation is
                                             still to send, scored by when a server must act next:
                                             the deadline while open, now once answered or expired,
                                             the end of a replica's claim while it sends
    cws:continuers                   zset    server replicas that can send continuations (started
                                             with the Celery app), scored by when they lapse
    cws:run:{<task>}                 string  a continuation's first run claimed it (SET NX): a
                                             repeated message with the same id is skipped

Channels: each stream above is also the name of a sharded pub/sub channel
(``SPUBLISH``) on which every event stored in it is published, with its id, as
it is stored; a server replica subscribes to the channels of the users and tasks
its connections follow (and to ``cws:broadcasts``), so it reads only the events
it delivers. ``cws:firehose``, written in open mode only, is plain pub/sub: it
serves connections that follow everything.

Every id sits in braces so that no id can name a key other than its own. The
prefix (which holds no ``:``) and the kind end at fixed colons, and what
follows the id (``}``, ``}:events``, ``}:pending``, ``}:reply``, ``}:acks``)
never ends with what follows it in another key of the same kind, so one key
string belongs to exactly one kind and one id whatever the id holds:
``cws:task:{T:events}`` is task ``T:events``'s hash, never task ``T``'s stream.
That holds for ids from the worker side too (a Celery task id, the owner
header), which may hold any character, braces included.

Ids from clients are validated as ``protocol.Identifier``, which excludes
``{`` and ``}``: keep it that way, so the braces are also Redis Cluster hash
tags around the whole id, and all keys of one task (one user, one
confirmation, one message) share a hash slot. Redis Cluster support will build
on that; the shared keys (``cws:broadcasts``, ``cws:running``, ``cws:pending``,
``cws:deferred``, ``cws:continuers``) and the scripts that touch several ids are what it still has to solve.

The Lua scripts in ``celery_ws/lua`` derive the per-user, per-task and
per-confirmation keys from the prefix with the same pattern (``id_key`` in
``common.lua``); keep both in step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "cws"

    def _of(self, kind: str, id_: str, suffix: str = "") -> str:
        """The key of one id: ``prefix:kind:{id}suffix``."""
        return f"{self.prefix}:{kind}:{{{id_}}}{suffix}"

    @property
    def broadcasts(self) -> str:
        return f"{self.prefix}:broadcasts"

    @property
    def firehose(self) -> str:
        return f"{self.prefix}:firehose"

    def user_events(self, user_id: str) -> str:
        return self._of("user", user_id, ":events")

    def task_events(self, task_id: str) -> str:
        return self._of("task", task_id, ":events")

    def task(self, task_id: str) -> str:
        return self._of("task", task_id)

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    def user_pending(self, user_id: str) -> str:
        return self._of("user", user_id, ":pending")

    def task_pending(self, task_id: str) -> str:
        return self._of("task", task_id, ":pending")

    def confirm(self, callback_id: str) -> str:
        return self._of("confirm", callback_id)

    def confirm_reply(self, callback_id: str) -> str:
        return self._of("confirm", callback_id, ":reply")

    def ack(self, message_id: str) -> str:
        return self._of("ack", message_id)

    def ack_list(self, message_id: str) -> str:
        return self._of("ack", message_id, ":acks")

    def producer(self, producer_id: str) -> str:
        return self._of("producer", producer_id)

    @property
    def deferred(self) -> str:
        return f"{self.prefix}:deferred"

    @property
    def continuers(self) -> str:
        return f"{self.prefix}:continuers"

    def run(self, task_id: str) -> str:
        return self._of("run", task_id)
