"""Fan-out: each event from the bus goes to the local connections that want
it, encoded once, and framed (and compressed) once per fan-out.

``websockets.broadcast()`` frames a message once per connection, and with
permessage-deflate that means one zlib run per connection: 1,000 watchers of
a broadcast cost 1,000 compressions of the same bytes. This server compresses
without context takeover, so a message's frame depends only on the window size
a connection negotiated; connections that agree on it share one frame, written
straight to their transports (``wsconn.write_text``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable

from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection

from .bus import StreamEntry
from .metrics import Metrics
from .registry import Registry
from .wsconn import Peer, write_text

__all__ = ["Fanout", "send_text"]

logger = logging.getLogger(__name__)


class Fanout:
    """Routes batches from the bus to this process's connections.

    Args:
        registry: who wants which events.
        metrics: messages out, send failures, delivery latency.
        write_buffer_limit: unsent bytes (socket buffer plus events held
            during a replay) past which a connection is dropped.
        compression_threshold: events shorter than this (bytes) go out
            uncompressed to every connection.
    """

    def __init__(
        self, registry: Registry, metrics: Metrics, write_buffer_limit: int, *, compression_threshold: int = 0
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.write_buffer_limit = write_buffer_limit
        self.compression_threshold = compression_threshold
        # the messages_out child of each event type (labels() costs more than the increment)
        self._sent_by_type: dict[str, Counter] = {}

    def deliver(self, entries: list[StreamEntry]) -> None:
        """Route a batch from the bus; encode each event once for all its targets."""
        now = time.time()
        for event_id, frame, owner, task_id, type_, workflow in entries:
            targets = self.registry.targets(owner or None, task_id or None, workflow or None)
            if targets:
                sent = self.send_all(targets, event_id, frame)
                counter = self._sent_by_type.get(type_)
                if counter is None:
                    counter = self._sent_by_type[type_] = self.metrics.messages_out.labels(type_ or "message")
                counter.inc(sent)
            if event_id:
                stored_at = int(event_id.split("-", 1)[0]) / 1000
                self.metrics.delivery_latency.observe(max(0.0, now - stored_at))

    def send_all(self, connections: Iterable[Peer], event_id: str, data: bytes) -> int:
        """A client that stopped reading is dropped rather than allowed to grow
        the server's memory or slow delivery to everyone else; events held for
        it during a replay count as unsent bytes.

        This loop and ``send_text()`` run once per connection per event, with
        one call into ``wsconn`` each. Measured on 600 real connections (a
        third plain, the rest deflate at two windows), medians of 40 rounds:
        5.0 µs per delivery, against 5.1 µs when these loops read websockets'
        attributes themselves. The socket write is most of it; the calls are
        within the noise.
        """
        healthy = []
        holding = self.registry.holding
        limit = self.write_buffer_limit
        slow = []
        for conn in connections:
            backlog = conn.open_backlog()
            if backlog is None:
                self.metrics.send_failures.inc()
                continue
            held = holding.get(conn) if holding else None
            if held is not None:
                held.events.append((event_id, data))
                held.size += len(data)
            if backlog + (held.size if held is not None else 0) > limit:
                slow.append(conn)
            elif held is None:
                healthy.append(conn)
        for conn in slow:  # after the loop: dropping changes the sets being iterated
            logger.warning("dropping a client that stopped reading (%s)", conn.remote_address)
            conn.drop_slow()
        return send_text(healthy, data, compress=len(data) >= self.compression_threshold)


def send_text(connections: Iterable[ServerConnection], data: bytes, *, compress: bool = True) -> int:
    """Send ``data`` (UTF-8 JSON) as one text message to each open connection;
    returns to how many. Like ``broadcast()``, it never waits for a slow reader:
    the caller bounds write buffers. ``compress=False`` sends it uncompressed
    to connections that negotiated compression too."""
    frames: dict[Hashable, bytes] = {}
    sent = 0
    for connection in connections:
        if write_text(connection, data, frames, compress=compress):
            sent += 1
    return sent
