"""The Python clients of a celery-ws server.

- :class:`Client` (``client/connection.py``): an asyncio client that follows a
  user's or a task's events, answers questions, cancels tasks and reconnects.
- ``celery-ws watch`` (``client/watch.py``): the terminal watcher built on it;
  it needs the ``rich`` package.

    from celery_ws.client import Client  # also: from celery_ws import Client

Its errors, ``AuthError`` and ``ConnectionLost``, are defined with every other
in :mod:`celery_ws.exceptions`. Only the client is imported here: the watcher
(and rich) load when used.
"""

from __future__ import annotations

from ..exceptions import AuthError, ConnectionLost
from .connection import Client
from .frames import Frame, Frames

__all__ = ["AuthError", "Client", "ConnectionLost", "Frame", "Frames"]
