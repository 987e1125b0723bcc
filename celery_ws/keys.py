"""Every Redis key celery-ws reads or writes, in one place.

Layout (``cws`` is the configurable prefix; the braces are part of the key,
``<...>`` stands for an id, ``<h>`` for a home, below)::

    cws:{<h>}:user:{<user>}:events      stream  one user's events, for resume
    cws:{<h>}:task:{<task>}:events      stream  one task's events, for resume and late viewers
    cws:{<h>}:task:{<task>}             hash    owner, final (terminal event type), cancel flag;
                                                in a workflow: its first task (workflow), the
                                                task it continues (parent), the next
                                                continuation (next)
    cws:{<h>}:user:{<user>}:pending     zset    the user's open confirmations, by deadline (an
                                                assignee's entry may outlive its question:
                                                readers check the question's state)
    cws:{<h>}:task:{<task>}:pending     zset    the task's open confirmations, by deadline
    cws:{<h>}:confirm:{<callback>}      hash    one confirmation: state, owner, assignees,
                                                deadline, the request event, the answer
    cws:{<h>}:confirm:{<callback>}:reply list   the answer, pushed once; the worker BLPOPs it
    cws:{<h>}:producer:{<producer>}     string  last sequence number stored from one worker process
    cws:{<h>}:running                   zset    the home's running tasks, by when their lease runs out
    cws:{<h>}:pending                   zset    the home's open confirmations, by deadline
    cws:{<h>}:deferred                  zset    deferred questions (``ask()``) whose continuation is
                                                still to send, by when a server must act next: the
                                                deadline while open, now once answered or expired,
                                                the end of a replica's claim while it sends
    cws:{0}:broadcasts                  stream  events for everyone (no user, no task)
    cws:firehose                        stream  open mode only: every event (ids come from here)
    cws:owner:{<task>}                  string  a task's owner, for lookups by task id alone (on a
                                                cluster only: elsewhere every key has one home)
    cws:ack:{<message>}                 string  the user an acknowledged send went to
    cws:ack:{<message>}:acks            list    one entry per acknowledgement; the sender BLPOPs it
    cws:continuers                      zset    server replicas that can send continuations (started
                                                with the Celery app), by when they lapse
    cws:run:{<task>}                    string  a continuation's first run claimed it (SET NX): a
                                                repeated message with the same id is skipped

**Homes.** Each atomic operation (a Lua script, a MULTI) touches keys of one
home only, so on a Redis Cluster it runs on one node: the first braces of a
key are its hash tag, and every key of one home lands in one hash slot. An
owner's home is a hash of the owner's id (``Keys.home``): their streams, their
tasks, their questions and the indexes those are swept from. A task without
an owner lives in its own id's home, a broadcast in home 0. A question's
callback id starts with its home (``<h>.<uuid>``), so an assignee who is not
the owner answers it without a lookup. Redis Cluster gets ``CLUSTER_HOMES``
homes, spread over the masters by their hash slots; a single Redis (or
Sentinel's master) has one, home 0, and needs no pointers.

What crosses homes is written outside the scripts: an assignee's index entry
(in the assignee's home; readers skip closed questions) and, on a cluster,
the owner pointer of a task (what finds a task's home from its id alone: a
``Publisher.cancel(task_id)``, a worker signal without the owner header).

Channels: each stream above is also the name of a pub/sub channel (sharded,
``SPUBLISH``, on a cluster) on which every event stored in it is published, with
its id, as it is stored; a server replica subscribes to the channels of the
users and tasks its connections follow (and to the broadcasts), so it reads
only the events it delivers. ``cws:firehose``, written in open mode only (which
a cluster refuses), is plain pub/sub: it serves connections that follow everything.

Every id sits in braces so that no id can name a key other than its own. The
prefix (which holds no ``:``), the home and the kind end at fixed colons, and
what follows the id (``}``, ``}:events``, ``}:pending``, ``}:reply``,
``}:acks``) never ends with what follows it in another key of the same kind,
so one key string belongs to exactly one kind and one id whatever the id
holds: ``cws:{0}:task:{T:events}`` is task ``T:events``'s hash, never task
``T``'s stream. That holds for ids from the worker side too (a Celery task id,
the owner header), which may hold any character, braces included. A script's
key that does not apply is the home's ``<home>:none`` placeholder, never
written (a cluster wants every declared key in the script's slot).

The Lua scripts in ``celery_ws/lua`` take the home's prefix (``cws:{<h>}``)
and derive the per-user, per-task and per-confirmation keys from it with the
same pattern (``id_key`` in ``common.lua``); keep both in step.
"""

from __future__ import annotations

import functools
import uuid
import zlib
from dataclasses import dataclass

__all__ = ["CLUSTER_HOMES", "Home", "Keys"]

#: homes on a Redis Cluster: enough to spread over many masters' hash slots,
#: few enough that a server sweeps every home's indexes each second
CLUSTER_HOMES = 256


def _key(prefix: str, kind: str, id_: str, suffix: str = "") -> str:
    """The key of one id: ``prefix:kind:{id}suffix``."""
    return f"{prefix}:{kind}:{{{id_}}}{suffix}"


@dataclass(frozen=True, slots=True)
class Home:
    """The keys of one home: ``prefix`` is ``cws:{<h>}``."""

    prefix: str

    @property
    def none(self) -> str:
        """A script's key that does not apply (never written)."""
        return f"{self.prefix}:none"

    @property
    def broadcasts(self) -> str:
        return f"{self.prefix}:broadcasts"

    def user_events(self, user_id: str) -> str:
        return _key(self.prefix, "user", user_id, ":events")

    def task_events(self, task_id: str) -> str:
        return _key(self.prefix, "task", task_id, ":events")

    def task(self, task_id: str) -> str:
        return _key(self.prefix, "task", task_id)

    def user_pending(self, user_id: str) -> str:
        return _key(self.prefix, "user", user_id, ":pending")

    def task_pending(self, task_id: str) -> str:
        return _key(self.prefix, "task", task_id, ":pending")

    def confirm(self, callback_id: str) -> str:
        return _key(self.prefix, "confirm", callback_id)

    def confirm_reply(self, callback_id: str) -> str:
        return _key(self.prefix, "confirm", callback_id, ":reply")

    def producer(self, producer_id: str) -> str:
        return _key(self.prefix, "producer", producer_id)

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def deferred(self) -> str:
        return f"{self.prefix}:deferred"


@functools.lru_cache(maxsize=1024)
def _home(prefix: str, number: int) -> Home:
    """Homes are made once: a publisher asks for one per event."""
    return Home(f"{prefix}:{{{number}}}")


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "cws"
    #: ``CLUSTER_HOMES`` on a Redis Cluster, else 1
    homes: int = 1

    def home(self, owner: str | None) -> Home:
        """The home of an owner's keys (of a task's, for a task without one;
        home 0 for an event for everyone)."""
        return self._home(self._number(owner))

    def _number(self, owner: str | None) -> int:
        return zlib.crc32(owner.encode()) % self.homes if owner and self.homes > 1 else 0

    def _home(self, number: int) -> Home:
        return _home(self.prefix, number)

    def all_homes(self) -> list[Home]:
        """Every home, for the servers' sweeps of the per-home indexes."""
        return [self._home(number) for number in range(self.homes)]

    @property
    def clustered(self) -> bool:
        """Whether a task's home can differ from home 0: lookups by task id alone
        go through the owner pointer."""
        return self.homes > 1

    def new_callback_id(self, owner: str) -> str:
        """A fresh callback id for a question of ``owner``, naming its home."""
        return f"{self._number(owner)}.{uuid.uuid4().hex}"

    def callback_home(self, callback_id: str) -> Home:
        """The home a callback id names; home 0 for one that names none (a
        made-up id then finds no question, as any unknown id)."""
        number, dot, _ = callback_id.partition(".")
        known = dot and number.isdigit() and int(number) < self.homes
        return self._home(int(number) if known else 0)

    @property
    def broadcasts(self) -> str:
        return self._home(0).broadcasts

    @property
    def firehose(self) -> str:
        return f"{self.prefix}:firehose"

    def owner(self, task_id: str) -> str:
        return _key(self.prefix, "owner", task_id)

    def ack(self, message_id: str) -> str:
        return _key(self.prefix, "ack", message_id)

    def ack_list(self, message_id: str) -> str:
        return _key(self.prefix, "ack", message_id, ":acks")

    @property
    def continuers(self) -> str:
        return f"{self.prefix}:continuers"

    def run(self, task_id: str) -> str:
        return _key(self.prefix, "run", task_id)
