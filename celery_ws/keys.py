"""Every Redis key celery-ws reads or writes, in one place.

Layout (``cws`` is the configurable prefix)::

    cws:events                 stream  every event, read by every server replica
    cws:user:{user}:events     stream  one user's events, for resume
    cws:task:{task}:events     stream  one task's events, for resume and late viewers
    cws:task:{task}            hash    owner, final (terminal event type), cancel flag
    cws:user:{user}:pending    zset    the user's open confirmations, scored by deadline
    cws:task:{task}:pending    zset    the task's open confirmations, scored by deadline
    cws:running                zset    running tasks, scored by when their lease runs out
    cws:pending                zset    every open confirmation, scored by deadline
    cws:confirm:{callback}     hash    one confirmation: state, owner, assignees, deadline,
                                       the request event, the answer
    cws:confirm:{callback}:reply list  the answer, pushed once; the worker BLPOPs it
    cws:ack:{message}          string  the user an acknowledged send went to
    cws:ack:{message}:acks     list    one entry per acknowledgement; the sender BLPOPs it
    cws:producer:{producer}    string  last sequence number stored from one worker process

The Lua scripts in ``celery_ws/lua`` derive the per-user and per-task keys
from the prefix with the same patterns; keep both in step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "cws"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def user_events(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:events"

    def task_events(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:events"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    @property
    def running(self) -> str:
        return f"{self.prefix}:running"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    def user_pending(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:pending"

    def task_pending(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}:pending"

    def confirm(self, callback_id: str) -> str:
        return f"{self.prefix}:confirm:{callback_id}"

    def confirm_reply(self, callback_id: str) -> str:
        return f"{self.prefix}:confirm:{callback_id}:reply"

    def ack(self, message_id: str) -> str:
        return f"{self.prefix}:ack:{message_id}"

    def ack_list(self, message_id: str) -> str:
        return f"{self.prefix}:ack:{message_id}:acks"

    def producer(self, producer_id: str) -> str:
        return f"{self.prefix}:producer:{producer_id}"
