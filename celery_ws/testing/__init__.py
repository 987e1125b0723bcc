"""Test support: real parts for suites that use celery-ws (ours and yours).

- :class:`RedisServer` (``testing/redis_server.py``): a redis-server started and
  stopped by its owner; ``make demo`` uses it when no Redis is reachable.
- :class:`ServerThread` (``testing/server.py``): a celery-ws server on its own
  thread and a free port, for tests that call blocking code.
- ``testing/plugin.py``: the pytest fixtures built from them, registered
  through the ``pytest11`` entry point.

Importing this package needs neither pytest nor the server: the two classes
load on first use (PEP 562), so ``RedisServer`` works in a plain install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .redis_server import RedisServer
    from .server import ServerThread

__all__ = ["RedisServer", "ServerThread"]

_LAZY = {"RedisServer": ".redis_server", "ServerThread": ".server"}

__getattr__ = lazy_getattr(__name__, _LAZY)
