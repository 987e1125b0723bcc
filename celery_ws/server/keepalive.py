"""Pings for every connection from one task, not one task per connection.

``websockets`` gives each connection its own keepalive task, about 1.6 KiB
that an idle watcher carries for its whole life. One loop that pings every
admitted connection each ``interval`` does the same job: a connection whose
pong does not come back within ``timeout`` is closed with 1011, as websockets
would close it.

A ping cannot be sent to a connection whose unsent bytes are over the write
limit: ``ping()`` would wait in ``drain()`` and stall the loop for everyone.
Such a connection is skipped once; if it is still stuck a round later with no
byte taken meanwhile, it has stopped reading and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from .wsconn import Peer

__all__ = ["keep_alive"]

logger = logging.getLogger(__name__)


async def keep_alive(
    connections: Callable[[], Iterable[Peer]], interval: float, timeout: float | None, stopping: asyncio.Event
) -> None:
    """Ping ``connections()`` every ``interval`` seconds until ``stopping`` is set."""
    stuck: dict[Peer, int] = {}
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
            return
        pongs = {}
        was_stuck, stuck = stuck, {}
        for connection in connections():
            if connection.state is not State.OPEN:
                continue
            if not connection.writable:
                backlog = connection.backlog
                if was_stuck.get(connection, -1) == backlog:
                    logger.info("dropping a connection that stopped reading (%s)", connection.remote_address)
                    connection.drop_slow()
                else:
                    stuck[connection] = backlog
                continue
            with contextlib.suppress(ConnectionClosed):
                # ping() gives a Future typed as an Awaitable: ensure_future() returns it as it is
                pongs[connection] = asyncio.ensure_future(await connection.ping())
        if timeout is None or not pongs:
            continue
        await asyncio.wait(pongs.values(), timeout=timeout)
        for connection, pong in pongs.items():
            if not pong.done() and connection.state is State.OPEN:
                logger.info(
                    "closing a connection that stopped answering pings (%s)", connection.remote_address
                )
                connection.close_soon(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
