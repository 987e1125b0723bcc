"""A celery-ws server on its own thread, for tests that call blocking code.

Kept out of the fixtures module so a suite can start extra servers (other
settings, a second replica) exactly as the ``celery_ws_server`` fixture does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from ..server.continuations import SendTask
from ..server.handlers import Revoke
from ..server.manager import WebSocketManager
from ..settings import Settings

__all__ = ["ServerThread"]

_START_TIMEOUT = 10.0


class ServerThread:
    """A WebSocketManager on its own event loop in a background thread, so that
    synchronous test code (``result.get()``) never blocks it."""

    def __init__(
        self, settings: Settings, *, revoke: Revoke | None = None, send_task: SendTask | None = None
    ) -> None:
        self.manager = WebSocketManager(
            settings=settings.model_copy(update={"port": 0}), revoke=revoke, send_task=send_task
        )
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="celery-ws-test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.manager.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._error is not None:
            raise RuntimeError("celery-ws test server did not start") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.manager.start_server())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.manager.stop_server())
        self._loop.close()

    def call(self, func: Callable[[], Any]) -> Any:
        """Run a synchronous ``func`` on the server's loop and return its result."""

        async def wrapper() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(_START_TIMEOUT)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_START_TIMEOUT)
