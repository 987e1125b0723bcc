"""Every use of ``websockets`` internals, behind one door.

celery-ws relies on parts of websockets 17 that its documentation does not
promise. They all live here, so that a release which moves one breaks this
module alone, and :func:`missing_internals` (run by
``tests/server/test_library_internals.py`` against a real connection) names what
moved. Other modules use only the names in ``__all__``. What is used, and why:

* ``ServerConnection`` as an asyncio protocol: :class:`Peer` overrides
  ``connection_made``, ``data_received`` and ``connection_lost`` to count
  every TCP connection and to bound every close (see :class:`Peer`).
* ``ServerConnection.transport``: ``get_write_buffer_size()`` measures a slow
  reader, ``abort()`` cuts it, ``write()`` sends a frame shared by many
  connections without ``send()``'s wait in ``drain()``, and keepalive pings,
  with no pong future (a pong the connection did not ask for is ignored).
* ``ServerConnection.paused``: a write would wait in ``drain()``.
* ``ServerConnection.loop``: the loop that times an abort.
* ``ServerConnection.protocol``: its ``state`` on the fan-out path, where the
  ``state`` property would be one more call per connection; its ``extensions``
  (and ``PerMessageDeflate.local_no_context_takeover`` and
  ``local_max_window_bits``), what a connection's frame of a message depends
  on; its ``send_text()``, to frame for a connection whose compressor keeps
  context.
* ``ServerConnection.send_in_progress``: a fragmented message is being sent,
  and a frame written now would land inside it.
* ``ServerConnection.send_data()``: flush what ``protocol.send_text()`` framed.
* ``Frame.serialize(mask=, extensions=)``: frame and compress a message once
  for every connection that agrees on how (``fanout.py``).
* ``ServerConnection.response``: websockets reads it only during the
  handshake, so the server drops it afterwards; ``ServerConnection.request``
  only for whether it is None, so an admitted connection's is one shared empty
  request. ``ServerProtocol.parser`` (the generator that parses what comes
  in), its ``gi_yieldfrom`` chain down to ``StreamReader.at_eof()``,
  ``Protocol.parse`` and ``protocol.reader.buffer``: the handshake request
  lives on in the parser, which is replaced by a frame parser in the same
  state once the connection is admitted (``forget_handshake``), which also
  deletes the protocol's ``select_subprotocol``, a closure ``serve()`` sets on
  each connection's protocol for the handshake.
* ``ServerConnection.drain_waiters`` and the ``queue`` of
  ``recv_messages.frames`` (websockets' ``SimpleQueue``): deques, which
  :class:`Peer` replaces with lists (an empty deque is 760 bytes); websockets
  appends, removes and iterates the first, and the second is used as
  ``append``, ``popleft``, ``extendleft``, ``len`` and truth.
* ``ServerConnection.recv_messages`` and ``transport``, which websockets sets
  in ``connection_made()``: :class:`Peer` sets them (to None) in ``__init__``
  already, so that every connection's attributes fit CPython's compact,
  shared-keys layout (``test_library_internals.py`` checks that they do).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, State
from websockets.streams import StreamReader

__all__ = [
    "Peer",
    "PeerPolicy",
    "forget_handshake",
    "handshake_forgotten",
    "missing_internals",
    "peer_class",
    "write_text",
]

_SERVER_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 30\r\nConnection: close\r\n\r\nServer connection limit reached"
)


@dataclass(eq=False)
class PeerPolicy:
    """What one server's connections share: the limits and who to tell."""

    max_connections: int
    write_buffer_limit: int
    close_timeout: float
    #: the connection is closing (whoever started it): forget it now
    on_closing: Callable[[Peer], None]
    #: a connection was dropped for not reading
    on_slow: Callable[[], None]
    #: a TCP connection was refused because the server was full
    on_refused: Callable[[], None]
    #: every TCP connection from accept to close
    live: set[Peer] = field(default_factory=set)


class Peer(ServerConnection):
    """The server's connection class: websockets' ``ServerConnection`` with
    limits that hold whatever the peer does.

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
    accepted while the server is full gets an HTTP 503 and is closed at once,
    so a flood of sockets that never authenticate holds at most
    ``max_connections`` file descriptors, each for at most ``auth_timeout``
    (handshake) plus ``auth_timeout`` (first frame). And a peer that stops
    reading while it makes the server write (pongs to its pings, replies) is
    dropped once the unsent bytes pass ``write_buffer_limit``, in any state.
    """

    policy: ClassVar[PeerPolicy]
    _abort_timer: asyncio.TimerHandle | None = None
    #: the close started by close_soon(), referenced so it is not collected midway
    _closer: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every attribute a connection gets while it is open is set here, in
        # __init__, so that all connections add them in the same order before
        # the next one exists: CPython 3.11 then keeps their values in a
        # compact array keyed by one table shared by the class (~300 bytes).
        # websockets sets these two in connection_made(), which asyncio calls
        # later; with many connections accepted at once, new ones were made
        # before the first connection_made() and the shared table had no room
        # left for them, and every connection got a dict of its own (1.3 KiB
        # more each, measured).
        self.recv_messages = None  # type: ignore[assignment]
        self.transport = None  # type: ignore[assignment]
        # flow control's waiters, none unless the peer stops reading: an empty
        # deque is 760 bytes (it allocates its first block), a list 56
        self.drain_waiters = []  # type: ignore[assignment]
        #: loop time of the oldest keepalive ping nothing has come back since
        self.unanswered_since: float | None = None

    # -- asyncio protocol callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages.frames.queue = _FrameQueue()  # type: ignore[assignment]
        policy = self.policy
        if len(policy.live) >= policy.max_connections:
            policy.on_refused()
            if isinstance(transport, asyncio.WriteTransport):  # always, for a TCP server
                transport.write(_SERVER_FULL)
            transport.close()
            return
        policy.live.add(self)

    def data_received(self, data: bytes) -> None:
        self.unanswered_since = None
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

    def open_backlog(self) -> int | None:
        """:attr:`backlog` of an open connection; None when it takes no more
        frames (closing or closed). One call where the fan-out would make
        four (``state``, ``transport``, ``is_closing()``, :attr:`backlog`)."""
        transport = self.transport
        if self.protocol.state is not State.OPEN or transport is None or transport.is_closing():
            return None
        return transport.get_write_buffer_size()

    @property
    def writable(self) -> bool:
        """Open, and a write would not wait behind unsent bytes (``ping()``
        and ``send()`` would block in ``drain()``)."""
        return self.protocol.state is State.OPEN and not self.paused

    def ping_now(self, now: float) -> float:
        """Write a keepalive ping (``now``: the loop's time); return the loop
        time of the oldest ping nothing has come back since. No pong future
        and no entry in ``pending_pings`` as ``ping()`` makes (their table
        stayed allocated, 160 bytes a connection): any data from the peer, its
        pong or anything else, shows it is alive, and :meth:`data_received`
        clears :attr:`unanswered_since`; websockets ignores the pong. The
        frame is written as it is, as ``protocol.send_ping(b"")`` would make
        it (a control frame may go between a message's fragments)."""
        if self.unanswered_since is None:
            self.unanswered_since = now
        self.transport.write(_PING)
        return self.unanswered_since

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close within ``close_timeout`` whether or not the peer reads."""
        self._closing()
        await super().close(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        """Start a bounded close without waiting for it (from callbacks)."""
        if self.protocol.state is State.OPEN:
            self._closer = asyncio.ensure_future(self.close(code, reason))

    def drop_slow(self) -> None:
        """Abort a connection that stopped reading: a close frame would only
        queue behind the bytes it does not read."""
        if self.transport is not None and not self.transport.is_closing():
            self.policy.on_slow()
            self.policy.on_closing(self)
            self.transport.abort()

    def abort(self) -> None:
        """Cut the TCP connection now, with no closing handshake: for a server
        whose connections did not close in time."""
        self.transport.abort()

    def _closing(self) -> None:
        if self._abort_timer is None and self.transport is not None:
            self.policy.on_closing(self)
            self._abort_timer = self.loop.call_later(self.policy.close_timeout, self.transport.abort)


class _FrameQueue(list[Frame]):
    """The incoming frames not read yet, a list where websockets' queue has a
    deque: an empty deque is 760 bytes (it allocates its first block), an
    empty list 56, and the queue holds a few frames (reading pauses past
    ``max_queue``), so taking from the front costs nothing that counts."""

    __slots__ = ()

    def popleft(self) -> Frame:
        return self.pop(0)

    def extendleft(self, frames: Iterable[Frame]) -> None:
        """As ``deque.extendleft``: each in turn to the front, so reversed."""
        self[:0] = list(frames)[::-1]


#: a ping with no payload, as a server sends it (unmasked)
_PING = Frame(Opcode.PING, b"").serialize(mask=False)


def peer_class(policy: PeerPolicy) -> type[Peer]:
    """A ``Peer`` class bound to one server's policy, for ``serve(create_connection=...)``."""

    class BoundPeer(Peer):
        pass

    BoundPeer.policy = policy
    return BoundPeer


def write_text(
    connection: ServerConnection, data: bytes, frames: dict[Hashable, bytes], *, compress: bool = True
) -> bool:
    """Write ``data`` (UTF-8) to ``connection`` as one text message, now: it
    never waits for a slow reader (the caller bounds write buffers). False when
    the connection is not open or is sending a fragmented message.

    ``frames`` holds this message's frames by what a frame depends on: no
    extension, or the window of deflate without context takeover. Connections
    that agree share one frame, made on first use. A connection whose encoder
    carries state from message to message is framed on its own.

    ``compress=False`` writes the plain frame to a connection that negotiated
    permessage-deflate too: a message's compression is its own choice (its
    first frame's RSV1 bit, RFC 7692), and a message that skips the
    compressor leaves its state alone.
    """
    protocol = connection.protocol
    if protocol.state is not State.OPEN or connection.send_in_progress is not None:
        return False
    extensions = protocol.extensions
    key: Hashable
    if not extensions or (
        not compress and len(extensions) == 1 and isinstance(extensions[0], PerMessageDeflate)
    ):
        key = ()
    elif (
        len(extensions) == 1
        and isinstance(deflate := extensions[0], PerMessageDeflate)
        and deflate.local_no_context_takeover
    ):
        key = deflate.local_max_window_bits
    else:
        protocol.send_text(data)
        connection.send_data()
        return True
    frame = frames.get(key)
    if frame is None:
        frame = frames[key] = Frame(Opcode.TEXT, data).serialize(
            mask=False, extensions=[] if key == () else extensions
        )
    connection.transport.write(frame)
    return True


#: an admitted connection's ``request``: websockets asks only whether it is None
#: (it is, until the handshake request has come)
_ADMITTED = Request("", Headers())


def forget_handshake(connection: ServerConnection) -> None:
    """Drop the handshake, which an idle connection would otherwise carry for
    its whole life: the response (2.3 KiB), the request (3.2 KiB: its
    headers, and its path with the token) and the subprotocol selector.

    websockets' parser keeps the request too, in a local of the generator that
    parsed it, which then parses every frame. When no frame is half read (the
    parser waits at the start of the next one, nothing of it consumed), that
    parser is replaced by a frame parser in the same state, and the request
    goes with the old one; otherwise the request is emptied in place."""
    connection.response = None
    # the handshake's subprotocol selector: a closure per connection (272 bytes),
    # set on the protocol by serve(); the class's own method shows through
    with contextlib.suppress(AttributeError):
        del connection.protocol.select_subprotocol
    request, connection.request = connection.request, _ADMITTED
    if not _restart_parser(connection.protocol) and request is not None:
        request.headers.clear()
        request.path = ""


def _restart_parser(protocol: Protocol) -> bool:
    """Replace the parser of an open connection with a frame parser, if it is
    between frames; False when it is not (or not made as websockets 17 makes it)."""
    frames = getattr(protocol.parser, "gi_yieldfrom", None)  # ServerProtocol.parse -> Protocol.parse
    waiting = getattr(frames, "gi_yieldfrom", None)  # -> StreamReader.at_eof: nothing consumed
    if (
        protocol.state is not State.OPEN
        or getattr(frames, "gi_code", None) is not _FRAMES
        or getattr(waiting, "gi_code", None) is not _BETWEEN_FRAMES
        or protocol.reader.buffer
    ):
        return False
    parser = Protocol.parse(protocol)
    next(parser)  # to where the old one waits: at_eof(), for the next frame's first byte
    protocol.parser = parser
    return True


_FRAMES = Protocol.parse.__code__
_BETWEEN_FRAMES = StreamReader.at_eof.__code__


_CONNECTION = (
    "protocol",
    "transport",
    "paused",
    "loop",
    "send_in_progress",
    "send_data",
    "response",
    "drain_waiters",
    "recv_messages",
)
_CALLBACKS = ("connection_made", "data_received", "connection_lost")
_TRANSPORT = ("write", "abort", "is_closing", "get_write_buffer_size")
_PROTOCOL = ("state", "extensions", "send_text", "parser", "reader")
_DEFLATE = ("local_no_context_takeover", "local_max_window_bits")


def missing_internals(connection: ServerConnection) -> list[str]:
    """The internals listed above that ``connection`` lacks, each as
    ``Class.attribute``; empty when all are there. ``connection`` must be the
    server side of an open connection that negotiated permessage-deflate
    without context takeover, as this server offers it."""
    missing = [f"ServerConnection.{name}" for name in _CONNECTION if not hasattr(connection, name)]
    missing += [
        f"ServerConnection.{name} (asyncio protocol callback)"
        for name in _CALLBACKS
        if getattr(ServerConnection, name, None) is getattr(asyncio.Protocol, name)
    ]
    transport = getattr(connection, "transport", None)
    missing += [f"ServerConnection.transport.{name}" for name in _TRANSPORT if not hasattr(transport, name)]
    protocol = getattr(connection, "protocol", None)
    missing += [f"ServerProtocol.{name}" for name in _PROTOCOL if not hasattr(protocol, name)]
    deflates = [ext for ext in getattr(protocol, "extensions", ()) if isinstance(ext, PerMessageDeflate)]
    missing += [
        f"PerMessageDeflate.{name}" for name in _DEFLATE if not (deflates and hasattr(deflates[0], name))
    ]
    if not hasattr(Frame, "serialize"):
        missing.append("Frame.serialize")
    if not hasattr(getattr(protocol, "reader", None), "buffer"):
        missing.append("ServerProtocol.reader.buffer")
    frames = getattr(getattr(connection, "recv_messages", None), "frames", None)
    if not isinstance(getattr(frames, "queue", None), _FrameQueue):
        missing.append("ServerConnection.recv_messages.frames.queue")
    return missing


def handshake_forgotten(connection: ServerConnection) -> bool:
    """``forget_handshake()`` released the handshake of this admitted, idle
    connection: its parser is a frame parser, its request the shared one, its
    protocol has no subprotocol selector of its own."""
    return (
        connection.request is _ADMITTED
        and getattr(connection.protocol.parser, "gi_code", None) is _FRAMES
        and "select_subprotocol" not in vars(connection.protocol)
    )
