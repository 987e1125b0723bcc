"""One connection's life: admission, authentication, the read loop, limits.

Token mode: the token comes in the query string (``?token=``), an
``Authorization: Bearer`` header, or a first ``{"action": "auth"}`` frame
within ``auth_timeout``. A connection that fails closes with 4401 before any
event is sent, and one whose token expires is closed at expiry. Open mode: no
identity until ``subscribe``; an unsubscribed connection sees every event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..protocol import CLOSE_UNAUTHORIZED, Auth, ProtocolError, dumps, error_frame, parse_action
from ..settings import Settings
from ..tokens import Identity, InvalidToken, TokenVerifier
from .handlers import ActionHandler
from .limits import REPLAY_COST, RateLimits, TokenBucket
from .registry import Registry, Session
from .wsconn import Peer, forget_handshake

__all__ = ["ConnectionLoop"]

#: frames of a replay sent between two turns of the event loop
_YIELD_EVERY = 64

_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

logger = logging.getLogger(__name__)


class ConnectionLoop:
    def __init__(
        self, settings: Settings, registry: Registry, handler: ActionHandler, count: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.handler = handler
        self.count = count
        self.verifier = TokenVerifier(settings) if settings.token_mode else None
        self.limits = RateLimits(settings.rate_limit, settings.rate_burst)
        self.expiries = Expiries()

    async def run(self, connection: ServerConnection) -> None:
        if not isinstance(connection, Peer):  # serve(create_connection=peer_class(...)) makes them so
            raise TypeError(f"celery-ws serves Peer connections, not {type(connection).__name__}")
        verifier = self.verifier
        identity, last_event_id = await self._authenticate(connection, verifier) if verifier else (None, None)
        if verifier and identity is None:
            return
        if (
            identity
            and self.registry.identity_connections(identity.user_id) >= self.settings.max_connections_per_user
        ):
            self.count("rejected_user_full")
            await connection.close(CloseCode.TRY_AGAIN_LATER, "Too many connections for this user")
            return
        forget_handshake(connection)  # 5.5 KiB per connection
        session = Session(
            connection, firehose=identity is None, identity=identity.user_id if identity else None
        )
        self.registry.add(session, authenticated=identity is not None)
        self.count("accepted")
        expiry = self.expiries.add(connection, identity.expires_at) if identity else None
        bucket = None  # looked up on the first frame: most connections only listen
        try:
            if identity is not None:
                if last_event_id is not None:  # a resume is charged from the start
                    bucket = self.limits.bucket(identity.user_id)
                    if bucket.in_debt:
                        # a reconnect loop must not buy a replay per connection
                        self.count("closed_rate_limit")
                        await connection.close(
                            CloseCode.TRY_AGAIN_LATER, "Resuming too often: try again later"
                        )
                        return
                # not kept in a local: this frame lives as long as the connection,
                # and orjson's output holds a 4 KiB buffer
                await self._send(
                    session, bucket, await self.handler.authenticated(session, identity, last_event_id)
                )
            identity = last_event_id = bucket = None  # not kept for the connection's life
            # The read loop is here, not in a coroutine of its own, and calls
            # recv() rather than iterating: an idle connection waits in it for
            # its whole life, and each coroutine (or async generator) on the way
            # is about 260 bytes. recv() raises ConnectionClosedOK where the
            # iteration would stop.
            while True:
                raw = await connection.recv()
                if bucket is None:
                    bucket = self.limits.bucket(session.identity if self.verifier else session)
                if not bucket.take():
                    if bucket.strikes > self.settings.rate_burst:
                        self.count("closed_rate_limit")
                        await connection.close(CloseCode.POLICY_VIOLATION, "Rate limit exceeded")
                        return
                    await connection.send(
                        dumps(
                            error_frame(
                                "rate_limited", f"Over {self.settings.rate_limit:g} messages/s: slow down"
                            )
                        ).decode()
                    )
                    continue
                await self._send(session, bucket, await self.handler.handle(session, raw))
        except ConnectionClosed:
            pass
        finally:
            self.registry.remove(session)
            if not self.verifier:
                self.limits.forget(session)
            if expiry is not None:
                expiry.discard(connection)

    async def _send(self, session: Session, bucket: TokenBucket | None, frames: list[bytes]) -> None:
        """Send replies, then any live events held back while they were made.
        Frames beyond the first (a replay) are charged to the sender's bucket."""
        if bucket is not None and len(frames) > 1:
            bucket.charge((len(frames) - 1) * REPLAY_COST)
        for n, frame in enumerate(frames, 1):
            await session.connection.send(frame.decode())
            if n % _YIELD_EVERY == 0:  # a long replay must not stall delivery to everyone else
                await asyncio.sleep(0)
        for text in self.registry.release(session):
            await session.connection.send(text)

    # -- token mode ---------------------------------------------------------------------

    async def _authenticate(
        self, connection: ServerConnection, verifier: TokenVerifier
    ) -> tuple[Identity | None, str | None]:
        """The token's identity and the ``last_event_id`` to resume from, from the
        request (query string, header) or a first ``auth`` frame."""
        token, last_event_id = _from_request(connection)
        try:
            if token is None:
                token, last_event_id = await self._first_message(connection)
            return verifier.verify(token), last_event_id
        except InvalidToken as exc:
            self.count("rejected_unauthorized")
            await connection.close(CLOSE_UNAUTHORIZED, str(exc)[:120])
        except (TimeoutError, ConnectionClosed):
            self.count("rejected_unauthorized")
            await connection.close(CLOSE_UNAUTHORIZED, "Authentication required")
        return None, None

    async def _first_message(self, connection: ServerConnection) -> tuple[str, str | None]:
        raw = await asyncio.wait_for(connection.recv(), self.settings.auth_timeout)
        try:
            action = parse_action(raw)
        except ProtocolError:
            raise InvalidToken("Authentication required") from None
        if not isinstance(action, Auth):
            raise InvalidToken("Authentication required")
        return action.token, action.last_event_id


class Expiries:
    """Closes each token-mode connection when its token expires, with one
    timer per second in which tokens expire rather than one per connection: a
    timer is about 350 bytes (the handle, a copy of the context, a bound
    method) that an idle connection carried for its whole life; a place in
    the set of its second is a few dozen. A token's ``exp`` is whole seconds
    (``issue_token()``); one with a fraction is closed at the next second."""

    def __init__(self) -> None:
        self._due: dict[int, set[Peer]] = {}

    def add(self, connection: Peer, expires_at: float) -> set[Peer]:
        """Close ``connection`` at ``expires_at`` (epoch seconds); returns the
        set it is in: discard it from there when it closes first."""
        second = math.ceil(expires_at)
        due = self._due.get(second)
        if due is None:
            due = self._due[second] = set()
            asyncio.get_running_loop().call_later(max(0.0, second - time.time()), self._expire, second)
        due.add(connection)
        return due

    def _expire(self, second: int) -> None:
        for connection in list(self._due.pop(second, ())):  # closing discards from the set
            connection.close_soon(CLOSE_UNAUTHORIZED, "Token expired")


def _from_request(connection: ServerConnection) -> tuple[str | None, str | None]:
    """``(token, last_event_id)`` from the query string or the Authorization header.
    A malformed ``last_event_id`` is ignored: the client then gets live events only."""
    request = connection.request
    if request is None:
        return None, None
    query = parse_qs(urlsplit(request.path).query)
    last_event_id = next(iter(query.get("last_event_id", [])), None)
    if last_event_id is not None and not _EVENT_ID.fullmatch(last_event_id):
        last_event_id = None
    if query.get("token"):
        return query["token"][0], last_event_id
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    return token, last_event_id
