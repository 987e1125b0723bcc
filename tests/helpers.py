"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(read: Callable[[], Any], expected: Any, timeout: float = 10.0) -> Any:
    """Poll a synchronous read (say ``lambda: result.state``) until it returns
    ``expected`` or ``timeout`` passes; returns the last value read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await asyncio.to_thread(read)
    while value != expected and loop.time() < deadline:
        await asyncio.sleep(0.05)
        value = await asyncio.to_thread(read)
    return value
