"""Waiting for frames: what a :class:`~celery_ws.client.Client` has received
and what it will receive, read by position (see :mod:`.frames`), and the end
of a task's workflow (see :mod:`.workflow`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from ..exceptions import ConnectionLost
from .frames import Frame, Frames
from .workflow import WorkflowEnd

__all__ = ["Match", "Waiting"]

Match = Callable[[Frame], bool]


class Waiting:
    """The waiting half of :class:`~celery_ws.client.Client` (which sets these)."""

    timeout: float
    frames: Frames
    closed: asyncio.Event
    connected: asyncio.Event
    _ws: ClientConnection | None

    async def wait_for(
        self,
        match: Match,
        *,
        start: int = 0,
        timeout: float | None = None,
        on: ClientConnection | None = None,
    ) -> Frame:
        """The first frame at or after position ``start`` that matches.

        Positions count every frame received, kept or not: ``frames.received``
        taken before sending something is where its reply will be. A frame no
        longer kept (see ``keep_frames``) cannot match; every frame still kept,
        and every new one, is looked at.

        Raises:
            TimeoutError: none arrived in time (or the client closed).
            ConnectionLost: ``on`` (a connection) closed while waiting.
        """
        async with (
            asyncio.timeout(timeout or self.timeout),
            contextlib.aclosing(self._frames_from(start, on=on)) as frames,
        ):
            async for frame in frames:
                if match(frame):
                    return frame
        raise TimeoutError("connection closed")

    async def wait_for_event(
        self, type_: str, *, task_id: str | None = None, timeout: float | None = None, **fields: Any
    ) -> Frame:
        """The first event of ``type_`` (for ``task_id``, with ``fields``) still kept, or the next."""

        def match(frame: Frame) -> bool:
            return (
                frame.get("type") == type_
                and (task_id is None or frame.get("task_id") == task_id)
                and all(frame.get(k) == v for k, v in fields.items())
            )

        return await self.wait_for(match, timeout=timeout)

    async def wait_for_workflow(self, task_id: str, *, timeout: float | None = None) -> Frame:
        """The terminal event of the workflow that started with task ``task_id``.

        A task that asks with ``ask()`` emits ``task_waiting`` rather than
        ending, and its continuation runs under another id; this waits through
        any number of such continuations for the event that ends the whole
        workflow: ``task_succeeded``, ``task_failed`` or ``task_cancelled`` whose
        ``workflow_id`` is ``task_id`` (a continuation's), or whose ``task_id``
        is ``task_id`` with no answer pending (a task that never asked; a
        waiting workflow cancelled). A task that never asks ends it with its own
        terminal event. Subscribe first, to the owner or to ``task_id``; a
        workflow that had ended before a subscription to ``task_id`` is found in
        that subscription's ``state``.

        Raises:
            TimeoutError: it did not end within ``timeout`` (the client's
                ``timeout`` by default: pass one as long as people take to answer).
        """
        end = WorkflowEnd(task_id)
        return end.event(await self.wait_for(end, timeout=timeout))

    def events(self, *, start: int = 0) -> AsyncGenerator[Frame, None]:
        """Every frame from position ``start`` on (the oldest still kept, by
        default), as it arrives, until the client closes (with
        ``reconnect=True``: across reconnects). A reader that falls more than
        ``keep_frames`` behind skips the frames no longer kept."""
        return self._frames_from(start)

    def _frames_from(
        self, position: int, *, on: ClientConnection | None = None
    ) -> AsyncGenerator[Frame, None]:
        """Frames from ``position`` on until the client closes, or (with ``on``)
        until that connection does: then ConnectionLost."""

        def more() -> bool:
            if self.closed.is_set():
                return False
            if on is not None and (on is not self._ws or not self.connected.is_set()):
                raise ConnectionLost("the connection closed before the reply arrived")
            return True

        return self.frames.follow(position, more)
