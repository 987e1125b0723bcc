"""Deprecated alias of :mod:`celery_ws.testing.redis_server`, kept for one release."""

from __future__ import annotations

import warnings

from .testing.redis_server import RedisServer, find_redis_server, free_port, redis_reachable

__all__ = ["RedisServer", "find_redis_server", "free_port", "redis_reachable"]

warnings.warn(
    "celery_ws.redis_server moved to celery_ws.testing.redis_server; the old path goes away in the "
    "next release",
    DeprecationWarning,
    stacklevel=2,
)
