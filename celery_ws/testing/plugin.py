"""Pytest fixtures for applications that use celery-ws (and for celery-ws itself).

Registered through the ``pytest11`` entry point (``celery_ws``); nothing runs
unless a test asks for one of these fixtures. They use real parts: a real
redis-server, a real WebSocket server on a free loopback port, real clients.

- ``celery_ws_redis_url``: a redis-server started for the session
  (:class:`~celery_ws.testing.redis_server.RedisServer`), or
  ``CELERY_WS_TEST_REDIS_URL``.
- ``celery_ws_settings``: settings pointing at it.
- ``celery_ws_server``: a running server (:class:`~celery_ws.testing.ServerThread`);
  override ``celery_ws_revoke`` to let it revoke tasks of your app, and
  ``celery_ws_send_task`` (``celery_sender(your_app)``, from
  ``celery_ws.server.continuations``) to let it send the continuations of
  ``ProgressTask.ask()``.
- ``celery_ws_client``: ``async with celery_ws_client(user_id="u1") as c: ...``
  gives a :class:`~celery_ws.client.Client` logged in as that user: with a
  token when the server runs in token mode, by ``subscribe`` in open mode.
  ``c.wait_for_event(type, task_id=...)`` and ``c.confirm(callback_id, proceed,
  data=...)`` are the helpers most tests need.
- ``celery_ws_worker``: an embedded Celery worker (threads pool) for your app,
  with ``CeleryWS`` attached; override ``celery_ws_app`` to return your app.

The only module of the package that imports pytest: the parts the fixtures
are made of live beside it and load without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from celery import Celery
from celery import _state as _celery_state

from ..client import Client
from ..protocol import ReplyType
from ..server.continuations import SendTask
from ..server.handlers import Revoke
from ..settings import Settings
from ..tokens import issue_token
from .redis_server import RedisServer
from .server import ServerThread

__all__ = [
    "celery_ws_app",
    "celery_ws_client",
    "celery_ws_redis_url",
    "celery_ws_revoke",
    "celery_ws_send_task",
    "celery_ws_server",
    "celery_ws_settings",
    "celery_ws_worker",
]


@pytest.fixture(scope="session")
def celery_ws_redis_url() -> Iterator[str]:
    url = os.environ.get("CELERY_WS_TEST_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def celery_ws_settings(celery_ws_redis_url: str) -> Settings:
    return Settings.load(redis_url=celery_ws_redis_url)


@pytest.fixture(scope="session")
def celery_ws_revoke() -> Revoke | None:
    """How the test server revokes tasks; None: cooperative cancellation only."""
    return None


@pytest.fixture(scope="session")
def celery_ws_send_task() -> SendTask | None:
    """How the test server sends deferred questions' continuations; None: it
    sends none (and ``ask()`` refuses unless another server can)."""
    return None


@pytest.fixture(scope="session")
def celery_ws_server(
    celery_ws_settings: Settings, celery_ws_revoke: Revoke | None, celery_ws_send_task: SendTask | None
) -> Iterator[ServerThread]:
    server = ServerThread(celery_ws_settings, revoke=celery_ws_revoke, send_task=celery_ws_send_task).start()
    yield server
    server.stop()


@pytest.fixture
def celery_ws_client(celery_ws_server: ServerThread) -> Callable[..., AbstractAsyncContextManager[Client]]:
    settings = celery_ws_server.manager.settings

    @asynccontextmanager
    async def connect(
        user_id: str | None = None, task_id: str | None = None, **options: Any
    ) -> AsyncIterator[Client]:
        if settings.token_mode and user_id is not None and "token" not in options:
            options["token"] = issue_token(user_id, ttl=3600, settings=settings)
        async with Client(celery_ws_server.url, **options) as client:
            if settings.token_mode and user_id is not None:
                await client.wait_for_event(ReplyType.AUTHENTICATED)
                user_id = None  # followed already
            if user_id is not None or task_id is not None:
                reply = await client.subscribe(user_id=user_id, task_id=task_id)
                assert reply["type"] == ReplyType.SUBSCRIPTION_CONFIRMED, reply
            yield client

    return connect


@pytest.fixture(scope="session")
def celery_ws_app() -> Celery:
    """Your Celery app; override this fixture to use ``celery_ws_worker``."""
    raise pytest.UsageError("override the celery_ws_app fixture to return your Celery app")


@pytest.fixture(scope="module")
def celery_ws_worker(celery_ws_app: Celery, celery_ws_redis_url: str) -> Iterator[Any]:
    """An embedded worker (threads pool, 4 threads) for ``celery_ws_app``, with
    CeleryWS attached and pointed at the test Redis. Module-scoped: Celery's
    worker state is per process, and two embedded workers alive at once (say,
    this and pytest-celery's session worker) disturb each other's timers."""
    from celery.contrib.testing.worker import start_worker

    from ..worker.integration import CeleryWS

    CeleryWS(celery_ws_app, redis_url=celery_ws_redis_url)
    current = _celery_state.get_current_app()
    with start_worker(
        celery_ws_app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        # start_worker makes its app the current one of this thread: tests that
        # publish through shared tasks must not be redirected to it
        current.set_current()
        yield worker
