"""Pings for every connection from one task, not one task per connection.

``websockets`` gives each connection its own keepalive task, about 1.6 KiB
that an idle watcher carries for its whole life. One loop that pings every
admitted connection each ``interval`` does the same job: a connection whose
pong does not come back within ``timeout`` is closed with 1011, as websockets
would close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

__all__ = ["keep_alive"]

logger = logging.getLogger(__name__)

_BACKLOG = 64 * 1024


async def keep_alive(connections: Callable[[], Iterable[ServerConnection]], interval: float,
                     timeout: float | None, stopping: asyncio.Event) -> None:
    """Ping ``connections()`` every ``interval`` seconds until ``stopping`` is set."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
            return
        pongs = {}
        for connection in list(connections()):
            pong = await _ping(connection)
            if pong is not None:
                pongs[connection] = pong
        if timeout is None or not pongs:
            continue
        await asyncio.wait(pongs.values(), timeout=timeout)
        for connection, pong in pongs.items():
            if not pong.done() and connection.state is State.OPEN:
                logger.info("closing a connection that stopped answering pings (%s)", connection.remote_address)
                asyncio.ensure_future(connection.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout"))


async def _ping(connection: ServerConnection) -> asyncio.Future[float] | None:
    """Send a ping, unless the connection is closing or has a backlog the ping
    would wait behind (the fan-out drops clients that stop reading)."""
    transport = connection.transport
    if connection.state is not State.OPEN or transport is None or transport.get_write_buffer_size() > _BACKLOG:
        return None
    try:
        return await connection.ping()  # type: ignore[return-value]
    except ConnectionClosed:
        return None
