"""Pings for every connection from one task, not one task per connection.

``websockets`` gives each connection its own keepalive task, about 1.6 KiB
that an idle watcher carries for its whole life. One loop that pings every
admitted connection once per ``interval`` does the same job: a connection
from which nothing (its pong or anything else) has come back within
``timeout`` of a ping is closed with 1011, as websockets would close it.

A round is spread over the interval, a slice of at most :data:`SLICE`
connections at a time: pinging 15,000 connections at once held the event
loop for 1.5 s, and every event delivered meanwhile waited for it. A ping is
written as a frame (:meth:`Peer.ping_now`), with none of the coroutine,
future, pending entry and wait that ``ping()`` costs per connection.

A connection whose unsent bytes are over the write limit is not pinged (its
pong could not be told from a reply to anything else it is sent anyway).
Such a connection is skipped once; if it is still stuck a round later with
no byte taken meanwhile, it has stopped reading and is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Callable, Iterable

from websockets.frames import CloseCode
from websockets.protocol import State

from .wsconn import Peer

__all__ = ["SLICE", "keep_alive"]

logger = logging.getLogger(__name__)

#: connections pinged at a time. The pongs of a slice come back together, so a
#: slice holds the loop twice: 16 (writing the pings, then reading the pongs,
#: about 0.9 ms) put 1 ms into the p99 of events delivered at 15,000 connections;
#: 4 keep each hold near 0.2 ms for the same work, in 4 times as many wake-ups
SLICE = 4
#: a wait longer than this (s) ends as soon as ``stopping`` is set
_WATCH_STOPPING = 0.1


async def keep_alive(
    connections: Callable[[], Iterable[Peer]], interval: float, timeout: float | None, stopping: asyncio.Event
) -> None:
    """Ping each of ``connections()`` once every ``interval`` seconds until ``stopping`` is set."""
    loop = asyncio.get_running_loop()
    stuck: dict[Peer, int] = {}
    #: (deadline, when sent, connections) of the pings sent, a slice at a
    #: time, to connections that had answered every earlier one
    waiting: collections.deque[tuple[float, float, list[Peer]]] = collections.deque()
    while not stopping.is_set():
        start = loop.time()
        peers = list(connections())
        slices = max(1, math.ceil(len(peers) / SLICE))
        step = interval / slices
        was_stuck, stuck = stuck, {}
        for k in range(slices):
            if await _sleep_until(loop, start + (k + 1) * step, waiting, stopping):
                return
            now = loop.time()
            pinged: list[Peer] = []
            for connection in peers[k * SLICE : (k + 1) * SLICE]:
                if connection.state is not State.OPEN:
                    continue
                if not connection.writable:
                    backlog = connection.backlog
                    if was_stuck.get(connection, -1) == backlog:
                        logger.info(
                            "dropping a connection that stopped reading (%s)", connection.remote_address
                        )
                        connection.drop_slow()
                    else:
                        stuck[connection] = backlog
                    continue
                # a connection still silent since an earlier ping already has its deadline
                if connection.ping_now(now) == now:
                    pinged.append(connection)
            if pinged and timeout is not None:
                waiting.append((now + timeout, now, pinged))


async def _sleep_until(
    loop: asyncio.AbstractEventLoop,
    when: float,
    waiting: collections.deque[tuple[float, float, list[Peer]]],
    stopping: asyncio.Event,
) -> bool:
    """Wait until ``when``, closing on the way each connection that has sent
    nothing since its ping by the ping's deadline; True once ``stopping`` is set."""
    while True:
        now = loop.time()
        while waiting and waiting[0][0] <= now:
            _, sent, pinged = waiting.popleft()
            for connection in pinged:
                since = connection.unanswered_since
                if since is not None and since <= sent and connection.state is State.OPEN:
                    logger.info(
                        "closing a connection that stopped answering pings (%s)", connection.remote_address
                    )
                    connection.close_soon(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        wake = min(when, waiting[0][0]) if waiting else when
        if wake - now > _WATCH_STOPPING:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wake - now)
        elif wake > now:  # a few ms between two slices: a plain sleep costs less
            await asyncio.sleep(wake - now)
        if stopping.is_set():
            return True
        if wake >= when:
            return False
