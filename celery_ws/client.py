"""An asyncio client for celery-ws servers.

    async with Client("ws://127.0.0.1:8765", reconnect=True) as client:
        await client.subscribe(user_id="user_123")
        async for event in client.events():
            if event["type"] == "task_step_result" and event["callback_id"]:
                await client.confirm(event["callback_id"], proceed=True)

Every frame the server sends is kept in ``client.frames`` in arrival order;
request methods wait for their own reply without consuming anything, so an
event that arrives between a request and its reply is never lost.

With ``reconnect=True`` a dropped connection is re-opened with exponential
backoff and jitter (so a restarted server is not hit by every client at the
same instant), and every subscription is renewed with ``last_event_id``, the
highest event id seen, so that a server that keeps history can replay what
was missed. Events are de-duplicated by id, so a replay that overlaps what
already arrived (or a confirmation re-sent on subscribe) shows up once.
``frames`` and ``events()`` span all connections. The client stops for good
after :meth:`close`, or when the server refuses its token (close code 4401:
retrying with the same token cannot succeed; see :attr:`auth_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from .exceptions import CeleryWSError
from .protocol import CLOSE_UNAUTHORIZED, SUBPROTOCOL, event_order

__all__ = ["AuthError", "Client", "ConnectionLost", "Frame"]

Frame = dict[str, Any]
Match = Callable[[Frame], bool]

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 10.0
#: how many event ids are remembered for de-duplication (a replay is at most
#: the server's history, 1000 events per user or task by default)
_SEEN_IDS = 10_000


class AuthError(CeleryWSError):
    """The server closed the connection with 4401: missing, invalid or expired token."""


class ConnectionLost(CeleryWSError, ConnectionError):
    """The connection a request was sent on closed before its reply arrived
    (with ``reconnect=True``; the request is not re-sent: it may have been applied)."""


class Client:
    """A WebSocket client for one person's (or one task's) events.

    Args:
        url: ``ws://host:port``.
        timeout: default seconds for :meth:`wait_for` and requests.
        token: a connection token (``celery_ws.issue_token``), sent as ``?token=``;
            or a function returning one, called for every (re)connection, so a
            long-lived client keeps working after a short-lived token expires.
        reconnect: re-open a dropped connection and renew subscriptions.
        backoff_initial, backoff_max: the first and the longest pause between attempts.
        max_attempts: give up after this many failed attempts in a row (None: never).
        auto_ack: answer events carrying ``requires_ack`` and ``message_id``.
        connect_options: passed to :func:`websockets.asyncio.client.connect`.
    """

    def __init__(self, url: str, *, timeout: float = _DEFAULT_TIMEOUT, token: str | Callable[[], str] | None = None,
                 reconnect: bool = False, backoff_initial: float = 0.5, backoff_max: float = 10.0,
                 max_attempts: int | None = None, auto_ack: bool = True, **connect_options: Any) -> None:
        self.url = url
        self._token = token
        self.timeout = timeout
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_attempts = max_attempts
        self.auto_ack = auto_ack
        self.frames: list[Frame] = []
        #: highest event id received; sent as ``last_event_id`` when re-subscribing
        self.last_event_id: str | None = None
        #: set when the server refused the token (close code 4401)
        self.auth_error: AuthError | None = None
        #: successful re-connections so far
        self.reconnects = 0
        #: message ids acknowledged, in order
        self.acked: list[str] = []
        #: the reply to each re-subscription after a reconnect (``recovered`` tells
        #: whether the server could replay everything missed)
        self.resubscriptions: list[Frame] = []
        #: the user a token named (from the server's ``authenticated`` frame)
        self.user_id: str | None = None
        self._connect_options: dict[str, Any] = {
            "proxy": None, "subprotocols": [Subprotocol(SUBPROTOCOL)], **connect_options,
        }
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._resubscriber: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._subscriptions: dict[tuple[str | None, str | None], None] = {}  # ordered set
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._acks_pending = 0
        self._acks_supported = True
        self._frames_at_open = 0
        self.closed = asyncio.Event()
        #: set while a connection is open
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Client:
        ws = await connect(self._connection_url(), **self._connect_options)
        self._opened(ws)
        self._runner = asyncio.create_task(self._run(ws))
        return self

    def _may_renew_token(self) -> bool:
        """After a 4401, try again only with a token function, and only if this
        connection had been accepted (its token expired): a token refused at
        once would be refused again."""
        accepted = len(self.frames) > self._frames_at_open
        return callable(self._token) and self.reconnect and accepted and not self._closing

    def _connection_url(self) -> str:
        token = self._token() if callable(self._token) else self._token
        return _with_token(self.url, token) if token else self.url

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
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
    def subscriptions(self) -> list[tuple[str | None, str | None]]:
        """``(user_id, task_id)`` pairs renewed after a reconnect."""
        return list(self._subscriptions)

    # -- the connection's life --------------------------------------------------------

    def _opened(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._acks_pending = 0
        self._acks_supported = True
        self._frames_at_open = len(self.frames)
        self.connected.set()

    async def _run(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._read(ws)
                self.connected.clear()
                self._changed.set()  # wakes requests waiting on the lost connection
                if ws.close_code == CLOSE_UNAUTHORIZED and not self._may_renew_token():
                    self.auth_error = AuthError(ws.close_reason or "unauthorized")
                    return
                if self._closing or not self.reconnect:
                    return
                reopened = await self._reopen()
                if reopened is None:
                    return
                ws = reopened
        finally:
            self.connected.clear()
            self.closed.set()
            self._changed.set()

    async def _reopen(self) -> ClientConnection | None:
        """Connect again, pausing ``backoff_initial * 2**n`` (capped, with full
        jitter in its upper half) between attempts; None once giving up."""
        attempt = 0
        while not self._closing and (self.max_attempts is None or attempt < self.max_attempts):
            delay = min(self.backoff_max, self.backoff_initial * 2 ** attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            attempt += 1
            try:
                ws = await connect(self._connection_url(), **self._connect_options)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                logger.info("celery-ws reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._closing:
                await ws.close()
                return None
            self._opened(ws)
            self.reconnects += 1
            self._resubscriber = asyncio.create_task(self._resubscribe(ws))
            return ws
        return None

    async def _resubscribe(self, ws: ClientConnection) -> None:
        """Renew every subscription on a new connection, asking for what was missed.

        A token connection follows its user by itself; subscribing to that user
        again is still needed to pass ``last_event_id``."""
        wanted = list(self._subscriptions)
        if self.user_id is not None and self.last_event_id is not None and (self.user_id, None) not in wanted:
            wanted.insert(0, (self.user_id, None))
        for user_id, task_id in wanted:
            try:
                reply = await self.subscribe(user_id=user_id, task_id=task_id, last_event_id=self.last_event_id)
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
                    self._changed.set()
                    if self.auto_ack and frame.get("requires_ack") and frame.get("message_id") is not None:
                        await self._ack(ws, frame["message_id"])
        except ConnectionClosed:
            pass

    def _accept(self, frame: Frame) -> bool:
        """Drop repeated events and the server's refusal of ``ack``; track the last id."""
        if frame.get("type") == "authenticated":
            self.user_id = frame.get("user_id")
        if (frame.get("type") == "error" and frame.get("code") == "unknown_action"
                and self._acks_pending > 0):
            # a server without acks yet: stop acking on this connection, and keep
            # the refusal out of ``frames`` where it would pass for a request's reply
            self._acks_pending -= 1
            self._acks_supported = False
            return False
        event_id = frame.get("id")
        if not isinstance(event_id, str):
            return True
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > _SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        with contextlib.suppress(ValueError):
            if self.last_event_id is None or event_order(event_id) > event_order(self.last_event_id):
                self.last_event_id = event_id
        return True

    async def _ack(self, ws: ClientConnection, message_id: Any) -> None:
        if not self._acks_supported:
            return
        self._acks_pending += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"action": "ack", "message_id": message_id}))
            self.acked.append(str(message_id))

    # -- waiting --------------------------------------------------------------------

    async def wait_for(self, match: Match, *, start: int = 0, timeout: float | None = None,
                       on: ClientConnection | None = None) -> Frame:
        """The first frame at or after index ``start`` that matches.

        Raises:
            TimeoutError: none arrived in time (or the client closed).
            ConnectionLost: ``on`` (a connection) closed while waiting.
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
                if on is not None and (on is not self._ws or not self.connected.is_set()):
                    raise ConnectionLost("the connection closed before the reply arrived")
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
        """Every frame from index ``start`` on, as it arrives, until the client closes
        (with ``reconnect=True``: across reconnects)."""
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
        ws = self.connection
        start = len(self.frames)
        await ws.send(json.dumps(frame))

        def match(reply: Frame) -> bool:
            if reply.get("type") == "error":
                return True
            return reply.get("type") == reply_type and all(reply.get(k) == v for k, v in reply_fields.items())
        return await self.wait_for(match, start=start, on=ws if self.reconnect else None)

    async def subscribe(self, *, user_id: str | None = None, task_id: str | None = None,
                        last_event_id: str | None = None) -> Frame:
        frame = {"action": "subscribe", "user_id": user_id, "task_id": task_id}
        if last_event_id is not None:
            frame["last_event_id"] = last_event_id
        reply = await self.request({k: v for k, v in frame.items() if v is not None}, "subscription_confirmed")
        if reply.get("type") == "subscription_confirmed":
            self._subscriptions[(user_id, task_id)] = None
        return reply

    async def unsubscribe(self, *, user_id: str | None = None, task_id: str | None = None) -> Frame:
        self._subscriptions.pop((user_id, task_id), None)
        frame = {"action": "unsubscribe", "user_id": user_id, "task_id": task_id}
        return await self.request({k: v for k, v in frame.items() if v is not None}, "unsubscribed")

    async def confirm(self, callback_id: str, proceed: bool, feedback: str | None = None) -> Frame:
        frame = {"action": "confirm", "callback_id": callback_id, "proceed": proceed, "feedback": feedback}
        return await self.request(frame, "confirmation_received", callback_id=callback_id)

    async def cancel(self, task_id: str) -> Frame:
        return await self.request({"action": "cancel", "task_id": task_id}, "cancel_received", task_id=task_id)

    async def ping(self, **data: Any) -> Frame:
        return await self.request({"action": "ping", **data}, "pong")


def _with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), parts.fragment))
