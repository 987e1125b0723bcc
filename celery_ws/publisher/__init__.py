"""Send events and ask questions from any process: a web app, a script, a task.

Like python-socketio's write-only managers, a publisher never talks to a
WebSocket: it writes to Redis, and every ``celery-ws serve`` replica delivers
from there. :class:`Publisher` is for synchronous code, :class:`AsyncPublisher`
for asyncio code; they differ only in ``await``, because both only carry out
what the sequences of :mod:`~celery_ws.publisher.core` ask (the layout of
websockets' sans-I/O protocol and its sync and asyncio layers).

Waiting for an answer survives Redis restarts and failovers: the question and
its answer live in Redis, so a wait that loses its connection reconnects with
backoff, reads what happened meanwhile and keeps its deadline.
"""

from __future__ import annotations

from .asyncio import AsyncPublisher
from .question import ConfirmOptions, Default, Outgoing
from .sync import Publisher
from .workflows import Cancellation

__all__ = ["AsyncPublisher", "Cancellation", "ConfirmOptions", "Default", "Outgoing", "Publisher"]
