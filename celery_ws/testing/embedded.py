"""The plugin's running parts, kept across tests while nothing they depend on changes.

The fixtures that depend on your app (``celery_ws_settings``,
``celery_ws_server``, ``celery_ws_worker``) are function-scoped, so you may
override ``celery_ws_app`` (or ``celery_ws_settings``, ``celery_ws_revoke``,
...) at any scope without a ScopeMismatch. What they hand out is costly to
start, so it lives here, in a session-scoped server cache and a module-scoped
worker slot: a test gets the running server or worker when its settings and
app are those of the test before, and a fresh one otherwise (the old one
stopped first).
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery
from celery import _state as _celery_state

from ..publisher import Publisher
from ..server.continuations import SendTask
from ..server.handlers import Revoke
from ..settings import Settings
from .questions import CANCELLED_BY
from .server import ServerThread

__all__ = ["ServerCache", "WorkerSlot"]

#: seconds a stopping embedded worker waits for its running tasks
_WORKER_SHUTDOWN = 30.0


class ServerCache:
    """One test server at a time, for given settings, revoke and send_task."""

    def __init__(self) -> None:
        self._key: tuple[Settings, Revoke | None, SendTask | None] | None = None
        self._server: ServerThread | None = None

    def server(self, settings: Settings, revoke: Revoke | None, send_task: SendTask | None) -> ServerThread:
        key = self._key
        if self._server is None or key is None or key[0] != settings or key[1:] != (revoke, send_task):
            self.stop()
            self._server = ServerThread(settings, revoke=revoke, send_task=send_task).start()
            self._key = (settings, revoke, send_task)
        return self._server

    def stop(self) -> None:
        server, self._server, self._key = self._server, None, None
        if server is not None:
            server.stop()


class WorkerSlot:
    """One embedded Celery worker at a time (Celery's worker state is per
    process: two embedded workers alive at once disturb each other's timers)."""

    def __init__(self) -> None:
        self._app: Celery | None = None
        self._settings: Settings | None = None
        self._stack: contextlib.ExitStack | None = None
        self._worker: Any = None

    def worker(self, app: Celery, settings: Settings) -> Any:
        """A threads-pool worker (4 threads) for ``app``, with ``CeleryWS``
        attached on exactly ``settings``, so the worker writes where the test
        server reads."""
        if self._stack is not None and app is self._app and settings == self._settings:
            return self._worker
        self.stop()
        from celery.contrib.testing.worker import start_worker

        from ..worker.integration import CeleryWS

        CeleryWS(app, **settings.model_dump())
        current = _celery_state.get_current_app()
        with contextlib.ExitStack() as stack:
            self._worker = stack.enter_context(
                start_worker(
                    app,
                    pool="threads",
                    concurrency=4,
                    perform_ping_check=False,
                    shutdown_timeout=_WORKER_SHUTDOWN,
                )
            )
            self._stack = stack.pop_all()
        # start_worker makes its app the current one of this thread: tests that
        # publish through shared tasks must not be redirected to it
        current.set_current()
        self._app, self._settings = app, settings
        return self._worker

    def stop(self) -> None:
        """Stop the worker, cancelling what it still runs first: a task blocked
        in ``confirm_step()`` wakes instead of holding the stop (and the
        process' exit) until its question times out."""
        stack, self._stack = self._stack, None
        if stack is None or self._settings is None:
            return
        from celery.worker import state

        running = [request.id for request in list(state.active_requests)]
        if running:
            publisher = Publisher(settings=self._settings)
            try:
                for task_id in running:
                    publisher.cancel(task_id, CANCELLED_BY)
            finally:
                publisher.close()
        stack.close()
        self._app = self._settings = self._worker = None
