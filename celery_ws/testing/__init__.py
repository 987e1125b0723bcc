"""Test support: real parts for suites that use celery-ws (ours and yours).

- :class:`RedisServer` (``testing/redis_server.py``): a redis-server started and
  stopped by its owner; ``make demo`` uses it when no Redis is reachable.
- :class:`ServerThread` (``testing/server.py``): a celery-ws server on its own
  thread and a free port, for tests that call blocking code.
- :func:`answer` and :func:`auto_answer` (``testing/questions.py``): answer a
  task's questions from test code, through Redis as a server would; also
  under ``task_always_eager``, where the task asks in the test's own thread.
- ``testing/plugin.py``: the pytest fixtures built from them, registered
  through the ``pytest11`` entry point.

Importing this package needs neither pytest nor the server: its names load
on first use (PEP 562), so ``RedisServer`` works in a plain install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .questions import AutoAnswer, answer, auto_answer
    from .redis_server import RedisServer
    from .server import ServerThread

__all__ = ["AutoAnswer", "RedisServer", "ServerThread", "answer", "auto_answer"]

_LAZY = {
    "AutoAnswer": ".questions",
    "RedisServer": ".redis_server",
    "ServerThread": ".server",
    "answer": ".questions",
    "auto_answer": ".questions",
}

__getattr__ = lazy_getattr(__name__, _LAZY)
