"""Small helpers shared by the tests, and the suite's one unit of patience.

Every bound on how long a test is willing to wait for something to happen
(an event, a task's end, a process to start) is a multiple of ``seconds()``,
which ``CELERY_WS_TEST_TIMEOUT_FACTOR`` scales, as websockets' tests scale
``MS`` by ``WEBSOCKETS_TESTS_TIMEOUT_FACTOR``: on a slow or busy machine run
``CELERY_WS_TEST_TIMEOUT_FACTOR=3 make test``. pytest-timeout's per-test limit
scales with it (``tests/conftest.py``). Timings that are the behaviour under
test (a 0.3 s ping interval, a 1 s ``auth_timeout``, a question that must
expire) are plain numbers and do not scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["TIMEOUT_FACTOR", "eventually", "read_until_closed", "running_bus", "seconds"]

#: how much longer than on a developer's machine the suite may wait
TIMEOUT_FACTOR = float(os.environ.get("CELERY_WS_TEST_TIMEOUT_FACTOR", "1"))


def seconds(n: float) -> float:
    """``n`` seconds of waiting, scaled by ``CELERY_WS_TEST_TIMEOUT_FACTOR``."""
    return n * TIMEOUT_FACTOR


async def eventually(read: Callable[[], Any], expected: Any, timeout: float | None = None) -> Any:
    """Poll a synchronous read (say ``lambda: result.state``) until it returns
    ``expected`` or ``timeout`` (default ``seconds(10)``) passes; returns the
    last value read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (seconds(10) if timeout is None else timeout)
    value = await asyncio.to_thread(read)
    while value != expected and loop.time() < deadline:
        await asyncio.sleep(0.05)
        value = await asyncio.to_thread(read)
    return value


async def read_until_closed(ws: ClientConnection, limit: int = 100_000) -> list[str | bytes]:
    """Every message ``ws`` receives until the server closes it (at most ``limit``)."""
    received: list[str | bytes] = []
    with contextlib.suppress(ConnectionClosed):
        for _ in range(limit):
            received.append(await ws.recv())  # noqa: PERF401 (what came before the close is kept)
    return received


@contextlib.asynccontextmanager
async def running_bus(bus: Any, *clients: Any) -> AsyncIterator[None]:
    """Run a server's event bus on its own, stopping it and closing its Redis
    ``clients`` on the way out, whatever the test did."""
    stopping = asyncio.Event()
    task = asyncio.create_task(bus.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for client in clients:
            await client.aclose()
