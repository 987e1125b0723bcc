"""How a client opens its connection, and opens it again after a drop.

Apart from the client's state, so the reconnect policy reads in one place:
exponential backoff with jitter in its upper half, so that a restarted server
is not hit by every client at the same instant, and a fresh token for every
attempt when the token is a function, so a long-lived client outlives a
short-lived token.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

__all__ = ["Dialer"]

logger = logging.getLogger(__name__)


@dataclass
class Dialer:
    """Where to connect, with which token and options, and how to retry.

    Args:
        url: ``ws://host:port``.
        token: sent as ``?token=``; a function is called for every attempt.
        options: passed to :func:`websockets.asyncio.client.connect`.
        backoff_initial, backoff_max: the first and the longest pause between attempts.
        max_attempts: give up after this many failed attempts in a row (None: never).
    """

    url: str
    token: str | Callable[[], str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    max_attempts: int | None = None

    async def dial(self) -> ClientConnection:
        token = self.token() if callable(self.token) else self.token
        return await connect(_with_token(self.url, token) if token else self.url, **self.options)

    async def redial(self, stopped: Callable[[], bool]) -> ClientConnection | None:
        """Connect again, pausing ``backoff_initial * 2**n`` (capped, with full
        jitter in its upper half) before each attempt; None once giving up, or
        as soon as ``stopped()``."""
        attempt = 0
        while not stopped() and (self.max_attempts is None or attempt < self.max_attempts):
            delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter, not a secret)
            attempt += 1
            try:
                ws = await self.dial()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                logger.info("celery-ws reconnect attempt %d failed: %s", attempt, exc)
                continue
            if stopped():
                await ws.close()
                return None
            return ws
        return None


def _with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), parts.fragment))
