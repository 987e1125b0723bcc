"""The server's connection class: websockets' ``ServerConnection`` with limits
that hold whatever the peer does.

websockets 17 bounds a close only once the close frame has left the buffer:
when the peer stops reading, ``close()`` waits in ``drain()`` for ever; a
connection failed with 1009 stays CLOSING until the peer goes away; and a
server with such connections never finishes shutting down (all verified).
Here every close ends within ``close_timeout``: the close frame is queued,
and the transport is aborted if the peer has not finished the closing
handshake by then. A connection leaves the registry the moment its close
starts, not when the peer gets round to it.

Every TCP connection, from accept to close (handshake, waiting for its
``auth`` frame, admitted, closing), counts toward ``max_connections``: one
accepted while the server is full gets an HTTP 503 and is closed at once, so a
flood of sockets that never authenticate holds at most ``max_connections``
file descriptors, each for at most ``auth_timeout`` (handshake) plus
``auth_timeout`` (first frame). And a peer that stops reading while it makes
the server write (pongs to its pings, replies) is dropped once the unsent
bytes pass ``write_buffer_limit``, in any state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State

__all__ = ["Peer", "PeerPolicy", "peer_class"]

_SERVER_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 30\r\nConnection: close\r\n\r\nServer connection limit reached")


@dataclass(eq=False)
class PeerPolicy:
    """What one server's connections share: the limits and who to tell."""

    max_connections: int
    write_buffer_limit: int
    close_timeout: float
    #: the connection is closing (whoever started it): forget it now
    on_closing: Callable[[ServerConnection], None]
    #: a connection was dropped for not reading
    on_slow: Callable[[], None]
    #: a TCP connection was refused because the server was full
    on_refused: Callable[[], None]
    #: every TCP connection from accept to close
    live: set[Peer] = field(default_factory=set)


class Peer(ServerConnection):
    policy: ClassVar[PeerPolicy]
    _abort_timer: asyncio.TimerHandle | None = None

    # -- asyncio protocol callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        policy = self.policy
        if len(policy.live) >= policy.max_connections:
            policy.on_refused()
            assert isinstance(transport, asyncio.Transport)
            transport.write(_SERVER_FULL)
            transport.close()
            return
        policy.live.add(self)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.backlog > self.policy.write_buffer_limit:
            self.drop_slow()
        elif self.protocol.state is State.CLOSING:  # the peer's close, or a failure such as 1009
            self._closing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.policy.live.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)
        self.policy.on_closing(self)

    # -- what the server calls ----------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Bytes written to this connection that the kernel has not taken yet."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def writable(self) -> bool:
        """Open, and a write would not wait behind unsent bytes (``ping()``
        and ``send()`` would block in ``drain()``)."""
        return self.protocol.state is State.OPEN and not self.paused

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close within ``close_timeout`` whether or not the peer reads."""
        self._closing()
        await super().close(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        """Start a bounded close without waiting for it (from callbacks)."""
        if self.protocol.state is State.OPEN:
            asyncio.ensure_future(self.close(code, reason))

    def drop_slow(self) -> None:
        """Abort a connection that stopped reading: a close frame would only
        queue behind the bytes it does not read."""
        if self.transport is not None and not self.transport.is_closing():
            self.policy.on_slow()
            self.policy.on_closing(self)
            self.transport.abort()

    def _closing(self) -> None:
        if self._abort_timer is None and self.transport is not None:
            self.policy.on_closing(self)
            self._abort_timer = self.loop.call_later(self.policy.close_timeout, self.transport.abort)


def peer_class(policy: PeerPolicy) -> type[Peer]:
    """A ``Peer`` class bound to one server's policy, for ``serve(create_connection=...)``."""

    class BoundPeer(Peer):
        pass

    BoundPeer.policy = policy
    return BoundPeer
