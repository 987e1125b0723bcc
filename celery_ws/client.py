"""An asyncio client for celery-ws servers.

    async with Client("ws://127.0.0.1:8765") as client:
        await client.subscribe(user_id="user_123")
        async for event in client.events():
            if event["type"] == "task_step_result" and event["callback_id"]:
                await client.confirm(event["callback_id"], proceed=True)

Every frame the server sends is kept in ``client.frames`` in arrival order;
request methods wait for their own reply without consuming anything, so an
event that arrives between a request and its reply is never lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["Client", "Frame"]

Frame = dict[str, Any]
Match = Callable[[Frame], bool]

_DEFAULT_TIMEOUT = 10.0


class Client:
    def __init__(self, url: str, *, timeout: float = _DEFAULT_TIMEOUT, **connect_options: Any) -> None:
        self.url = url
        self.timeout = timeout
        self.frames: list[Frame] = []
        self._connect_options = {"proxy": None, **connect_options}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.closed = asyncio.Event()

    async def __aenter__(self) -> Client:
        self._ws = await connect(self.url, **self._connect_options)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    @property
    def connection(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("use 'async with Client(...)' first")
        return self._ws

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    # -- waiting --------------------------------------------------------------------

    async def wait_for(self, match: Match, *, start: int = 0, timeout: float | None = None) -> Frame:
        """The first frame at or after index ``start`` that matches.

        Raises:
            TimeoutError: none arrived in time (or the connection closed).
        """
        async with asyncio.timeout(timeout or self.timeout):
            index = start
            while True:
                while index < len(self.frames):
                    if match(self.frames[index]):
                        return self.frames[index]
                    index += 1
                if self.closed.is_set():
                    raise TimeoutError("connection closed")
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_event(self, type_: str, *, task_id: str | None = None, timeout: float | None = None,
                             **fields: Any) -> Frame:
        """The first event of ``type_`` (for ``task_id``, with ``fields``) received so far or next."""
        def match(frame: Frame) -> bool:
            return (frame.get("type") == type_ and (task_id is None or frame.get("task_id") == task_id)
                    and all(frame.get(k) == v for k, v in fields.items()))
        return await self.wait_for(match, timeout=timeout)

    async def events(self, *, start: int = 0) -> AsyncIterator[Frame]:
        """Every frame from index ``start`` on, as it arrives, until the connection closes."""
        index = start
        while True:
            while index < len(self.frames):
                yield self.frames[index]
                index += 1
            if self.closed.is_set():
                return
            self._changed.clear()
            await self._changed.wait()

    # -- requests -------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self.connection.send(json.dumps(frame))

    async def request(self, frame: Frame, reply_type: str, **reply_fields: Any) -> Frame:
        """Send ``frame`` and return its reply: ``reply_type`` or an error frame."""
        start = len(self.frames)
        await self.send(frame)

        def match(reply: Frame) -> bool:
            if reply.get("type") == "error":
                return True
            return reply.get("type") == reply_type and all(reply.get(k) == v for k, v in reply_fields.items())
        return await self.wait_for(match, start=start)

    async def subscribe(self, *, user_id: str | None = None, task_id: str | None = None,
                        last_event_id: str | None = None) -> Frame:
        frame = {"action": "subscribe", "user_id": user_id, "task_id": task_id}
        if last_event_id is not None:
            frame["last_event_id"] = last_event_id
        return await self.request({k: v for k, v in frame.items() if v is not None}, "subscription_confirmed")

    async def confirm(self, callback_id: str, proceed: bool, feedback: str | None = None) -> Frame:
        frame = {"action": "confirm", "callback_id": callback_id, "proceed": proceed, "feedback": feedback}
        return await self.request(frame, "confirmation_received", callback_id=callback_id)

    async def cancel(self, task_id: str) -> Frame:
        return await self.request({"action": "cancel", "task_id": task_id}, "cancel_received", task_id=task_id)

    async def ping(self, **data: Any) -> Frame:
        return await self.request({"action": "ping", **data}, "pong")
