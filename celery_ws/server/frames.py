"""Fan-out writes: each event is framed, and compressed, once per fan-out.

``websockets.broadcast()`` frames a message once per connection, and with
permessage-deflate that means one zlib run per connection: 1,000 watchers of
a broadcast cost 1,000 compressions of the same bytes. This server compresses
without context takeover, so a message's frame depends only on the window size
a connection negotiated; connections that agree on it share one frame, written
straight to their transports.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["send_text"]


def send_text(connections: Iterable[ServerConnection], data: bytes) -> int:
    """Send ``data`` (UTF-8 JSON) as one text message to each open connection;
    returns to how many. Like ``broadcast()``, it never waits for a slow reader:
    the caller bounds write buffers."""
    frames: dict[Hashable, bytes] = {}
    sent = 0
    for connection in connections:
        protocol = connection.protocol
        if protocol.state is not State.OPEN or connection.send_in_progress is not None:
            continue
        key = _frame_key(protocol.extensions)
        if key is None:  # an encoder that carries state from message to message
            protocol.send_text(data)
            connection.send_data()
        else:
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=protocol.extensions)
            connection.transport.write(frame)
        sent += 1
    return sent


def _frame_key(extensions: Sequence[Extension]) -> Hashable | None:
    """What a connection's frame of a message depends on; None when it also
    depends on the messages sent before."""
    if not extensions:
        return ()
    if len(extensions) == 1:
        deflate = extensions[0]
        if isinstance(deflate, PerMessageDeflate) and deflate.local_no_context_takeover:
            return deflate.local_max_window_bits
    return None
