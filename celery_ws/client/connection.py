"""An asyncio client for celery-ws servers.

    async with Client("ws://127.0.0.1:8765", reconnect=True) as client:
        await client.subscribe(user_id="user_123")
        async for event in client.events():
            if event["type"] == "task_step_result" and event["callback_id"]:
                await client.confirm(event["callback_id"], proceed=True)

The newest frames the server sent (``keep_frames``, 1000 by default) are kept
in ``client.frames`` in arrival order, so a client that runs for days stays
small; request methods wait for their own reply without consuming anything, so
an event that arrives between a request and its reply is never lost.

With ``reconnect=True`` a dropped connection is re-opened with exponential
backoff and jitter (so a restarted server is not hit by every client at the
same instant), and every subscription is renewed with ``last_event_id``, the
highest event id seen, so that a server that keeps history can replay what
was missed. Events are de-duplicated by id, so a replay that overlaps what
already arrived (or a confirmation re-sent on subscribe) shows up once.
``frames`` and ``events()`` span all connections. The client stops for good
after :meth:`close`, or when the server refuses its token (close code 4401:
retrying with the same token cannot succeed; see :attr:`auth_error`).

Waiting (``wait_for``, ``wait_for_event``, ``events()``, and
``wait_for_workflow``: the end of a task and of every continuation its
questions led to) is in ``waiting.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from ..exceptions import AuthError, ConnectionLost
from ..protocol import CLOSE_UNAUTHORIZED, SUBPROTOCOL, ReplyType
from .acks import Acks
from .dial import Dialer
from .frames import Frame, Frames, SeenEvents
from .waiting import Waiting

__all__ = ["AuthError", "Client", "ConnectionLost"]

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 10.0
#: frames kept by default: a whole task's events, and a screenful of history
#: for a watcher, in well under a megabyte
_KEEP_FRAMES = 1000


class Client(Waiting):
    """A WebSocket client for one person's (or one task's) events.

    Args:
        url: ``ws://host:port``.
        timeout: default seconds for :meth:`wait_for` and requests.
        token: a connection token (``celery_ws.issue_token``), sent as ``?token=``;
            or a function returning one, called for every (re)connection, so a
            long-lived client keeps working after a short-lived token expires.
        reconnect: re-open a dropped connection and renew subscriptions.
        backoff_initial: the first pause between attempts.
        backoff_max: the longest pause between attempts.
        max_attempts: give up after this many failed attempts in a row (None: never).
        auto_ack: answer events carrying ``requires_ack`` and ``message_id``.
        keep_frames: how many of the newest frames :attr:`frames` keeps (and how
            many ids :attr:`acked`); None keeps every frame, for short scripts
            and tests that inspect a whole run.
        connect_options: passed to :func:`websockets.asyncio.client.connect`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = _DEFAULT_TIMEOUT,
        token: str | Callable[[], str] | None = None,
        reconnect: bool = False,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_attempts: int | None = None,
        auto_ack: bool = True,
        keep_frames: int | None = _KEEP_FRAMES,
        **connect_options: Any,
    ) -> None:
        self.timeout = timeout
        self.reconnect = reconnect
        self.auto_ack = auto_ack
        #: the newest ``keep_frames`` frames received, oldest first
        self.frames = Frames(keep_frames)
        #: set when the server refused the token (close code 4401)
        self.auth_error: AuthError | None = None
        #: successful re-connections so far
        self.reconnects = 0
        self._acks = Acks(keep_frames)
        #: the reply to each re-subscription after a reconnect (``recovered`` tells
        #: whether the server could replay everything missed)
        self.resubscriptions: list[Frame] = []
        #: the user a token named (from the server's ``authenticated`` frame)
        self.user_id: str | None = None
        #: where and how it connects, and the reconnect policy
        options = {"proxy": None, "subprotocols": [Subprotocol(SUBPROTOCOL)], **connect_options}
        self.dialer = Dialer(url, token, options, backoff_initial, backoff_max, max_attempts)
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._resubscriber: asyncio.Task[None] | None = None
        self._closing = False
        self._subscriptions: dict[tuple[str | None, str | None], None] = {}  # ordered set
        self._seen = SeenEvents()
        self._frames_at_open = 0
        self.closed = asyncio.Event()
        #: set while a connection is open
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Client:
        ws = await self.dialer.dial()
        self._opened(ws)
        self._runner = asyncio.create_task(self._run(ws))
        return self

    def _may_renew_token(self) -> bool:
        """After a 4401, try again only with a token function, and only if this
        connection had been accepted (its token expired): a token refused at
        once would be refused again."""
        accepted = self.frames.received > self._frames_at_open
        return callable(self.dialer.token) and self.reconnect and accepted and not self._closing

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close for good: no reconnect follows."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            if not self._runner.done() and not self.connected.is_set():
                self._runner.cancel()  # sleeping between reconnect attempts
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._resubscriber is not None and not self._resubscriber.done():
            self._resubscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resubscriber

    @property
    def connection(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("use 'async with Client(...)' first")
        return self._ws

    @property
    def url(self) -> str:
        return self.dialer.url

    @property
    def acked(self) -> list[str]:
        """Message ids acknowledged, in order (the newest ``keep_frames``)."""
        return list(self._acks.sent)

    @property
    def last_event_id(self) -> str | None:
        """The highest event id received; sent as ``last_event_id`` when re-subscribing."""
        return self._seen.last

    @property
    def subscriptions(self) -> list[tuple[str | None, str | None]]:
        """``(user_id, task_id)`` pairs renewed after a reconnect."""
        return list(self._subscriptions)

    # -- the connection's life --------------------------------------------------------

    def _opened(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._acks.reset()
        self._frames_at_open = self.frames.received
        self.connected.set()

    async def _run(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._read(ws)
                self.connected.clear()
                self.frames.wake()  # wakes requests waiting on the lost connection
                if ws.close_code == CLOSE_UNAUTHORIZED and not self._may_renew_token():
                    self.auth_error = AuthError(ws.close_reason or "unauthorized")
                    return
                if self._closing or not self.reconnect:
                    return
                reopened = await self.dialer.redial(lambda: self._closing)
                if reopened is None:
                    return
                ws = reopened
                self._opened(ws)
                self.reconnects += 1
                self._resubscriber = asyncio.create_task(self._resubscribe(ws))
        finally:
            self.connected.clear()
            self.closed.set()
            self.frames.wake()

    async def _resubscribe(self, ws: ClientConnection) -> None:
        """Renew every subscription on a new connection, asking for what was missed.

        A token connection follows its user by itself; subscribing to that user
        again is still needed to pass ``last_event_id``."""
        wanted = list(self._subscriptions)
        if self.user_id is not None and self.last_event_id is not None and (self.user_id, None) not in wanted:
            wanted.insert(0, (self.user_id, None))
        for user_id, task_id in wanted:
            try:
                reply = await self.subscribe(
                    user_id=user_id, task_id=task_id, last_event_id=self.last_event_id
                )
            except (ConnectionClosed, ConnectionLost, TimeoutError) as exc:
                logger.info("celery-ws re-subscribe failed: %r", exc)
                return  # the connection is gone again; the next one retries
            self.resubscriptions.append(reply)
            if ws is not self._ws:
                return

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if isinstance(frame, dict) and self._accept(frame):
                    self.frames.append(frame)
                    if self.auto_ack and frame.get("requires_ack") and frame.get("message_id") is not None:
                        await self._acks.ack(ws, frame["message_id"])
        except ConnectionClosed:
            pass

    def _accept(self, frame: Frame) -> bool:
        """Drop repeated events and the server's refusal of ``ack``; track the last id."""
        if frame.get("type") == ReplyType.AUTHENTICATED:
            self.user_id = frame.get("user_id")
        if self._acks.is_refusal(frame):
            return False
        event_id = frame.get("id")
        return not isinstance(event_id, str) or self._seen.first_time(event_id)

    # -- requests -------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self.connection.send(json.dumps(frame))

    async def request(self, frame: Frame, reply_type: str, **reply_fields: Any) -> Frame:
        """Send ``frame`` and return its reply: ``reply_type`` (a :class:`ReplyType`)
        with ``reply_fields``, or an error frame."""
        ws = self.connection
        start = self.frames.received
        await ws.send(json.dumps(frame))

        def match(reply: Frame) -> bool:
            if reply.get("type") == ReplyType.ERROR:
                return True
            return reply.get("type") == reply_type and all(reply.get(k) == v for k, v in reply_fields.items())

        return await self.wait_for(match, start=start, on=ws if self.reconnect else None)

    async def subscribe(
        self, *, user_id: str | None = None, task_id: str | None = None, last_event_id: str | None = None
    ) -> Frame:
        frame = {"action": "subscribe", "user_id": user_id, "task_id": task_id}
        if last_event_id is not None:
            frame["last_event_id"] = last_event_id
        # matched by what it confirms: a token's connection is also sent the
        # confirmation of its user's own subscription, maybe after this request
        reply = await self.request(
            {k: v for k, v in frame.items() if v is not None},
            ReplyType.SUBSCRIPTION_CONFIRMED,
            user_id=user_id,
            task_id=task_id,
        )
        if reply.get("type") == ReplyType.SUBSCRIPTION_CONFIRMED:
            self._subscriptions[(user_id, task_id)] = None
        return reply

    async def unsubscribe(self, *, user_id: str | None = None, task_id: str | None = None) -> Frame:
        self._subscriptions.pop((user_id, task_id), None)
        frame = {"action": "unsubscribe", "user_id": user_id, "task_id": task_id}
        return await self.request({k: v for k, v in frame.items() if v is not None}, ReplyType.UNSUBSCRIBED)

    async def confirm(
        self,
        callback_id: str,
        proceed: bool,
        feedback: str | None = None,
        *,
        data: Mapping[str, Any] | None = None,
    ) -> Frame:
        """Answer a question. ``data`` answers a typed one (it carries an
        ``answer_schema``): an answer that does not fit it comes back as an
        ``invalid_answer`` error naming the ``fields``, and the task keeps waiting."""
        frame: Frame = {
            "action": "confirm",
            "callback_id": callback_id,
            "proceed": proceed,
            "feedback": feedback,
        }
        if data is not None:
            frame["data"] = dict(data)
        return await self.request(frame, ReplyType.CONFIRMATION_RECEIVED, callback_id=callback_id)

    async def cancel(self, task_id: str) -> Frame:
        return await self.request(
            {"action": "cancel", "task_id": task_id}, ReplyType.CANCEL_RECEIVED, task_id=task_id
        )

    async def ping(self, **data: Any) -> Frame:
        return await self.request({"action": "ping", **data}, ReplyType.PONG)
