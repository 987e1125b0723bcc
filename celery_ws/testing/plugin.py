"""Pytest fixtures for applications that use celery-ws (and for celery-ws itself).

Registered through the ``pytest11`` entry point (``celery_ws``); nothing runs
unless a test asks for one of these fixtures. They use real parts: a real
redis-server, a real WebSocket server on a free loopback port, real clients,
an embedded Celery worker. None needs pytest-asyncio: only a test that uses
``celery_ws_client`` (an async context manager) is a coroutine, and needs an
async runner (pytest-asyncio, in auto mode or with ``@pytest.mark.asyncio``).

Scopes. ``celery_ws_redis_url`` is session-scoped (one redis-server per
run); so are the defaults of ``celery_ws_revoke`` and ``celery_ws_send_task``.
Everything that depends on your app (``celery_ws_app``, ``celery_ws_settings``,
``celery_ws_server``, ``celery_ws_worker``, ``celery_ws_client``) is
function-scoped, so each may be overridden at any scope: a function-scoped
``celery_ws_app`` is no ScopeMismatch. The server and the worker behind them
are kept running while their settings and app stay the same
(``testing/embedded.py``): the server for the session, the worker for the
module.

- ``celery_ws_redis_url``: a redis-server started for the session
  (:class:`~celery_ws.testing.redis_server.RedisServer`), or
  ``CELERY_WS_TEST_REDIS_URL``.
- ``celery_ws_app``: your Celery app; None unless overridden.
- ``celery_ws_settings``: your app's settings (its ``CeleryWS`` or ``app.conf``:
  key prefix, secret and so mode, ...) on the test Redis; without an app, the
  environment's.
- ``celery_ws_server``: a running server (:class:`~celery_ws.testing.ServerThread`)
  on those settings; override ``celery_ws_revoke`` to let it revoke tasks of
  your app, and ``celery_ws_send_task`` (``celery_sender(your_app)``, from
  ``celery_ws.server.continuations``) to let it send the continuations of
  ``ProgressTask.ask()``.
- ``celery_ws_client``: ``async with celery_ws_client(user_id="u1") as c: ...``
  gives a :class:`~celery_ws.client.Client` logged in as that user: with a
  token when the server runs in token mode, by ``subscribe`` in open mode.
- ``celery_ws_worker``: an embedded Celery worker (threads pool) for your
  app, with ``CeleryWS`` attached on ``celery_ws_settings``. When the test
  ends, the questions it left open are cancelled (their tasks get
  ``TaskCancelled``), so a failed test never leaves the worker blocked in
  ``confirm_step()``.
- ``celery_ws_answer`` / ``celery_ws_auto_answer``: :func:`~celery_ws.testing.answer`
  and :func:`~celery_ws.testing.auto_answer` on ``celery_ws_settings``.

The only module of the package that imports pytest: the parts the fixtures
are made of live beside it and load without it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from celery import Celery

from ..client import Client
from ..protocol import ReplyType, UserConfirmation
from ..server.continuations import SendTask
from ..server.handlers import Revoke
from ..settings import Settings
from ..tokens import issue_token
from .embedded import ServerCache, WorkerSlot
from .questions import AutoAnswer, answer, auto_answer, cancel_questions, open_questions, settings_for
from .redis_server import RedisServer
from .server import ServerThread

__all__ = [
    "celery_ws_answer",
    "celery_ws_app",
    "celery_ws_auto_answer",
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


@pytest.fixture
def celery_ws_app() -> Celery | None:
    """Your Celery app; override this fixture (at any scope) to use
    ``celery_ws_worker`` and to take the settings from it."""
    return None


@pytest.fixture
def celery_ws_settings(celery_ws_redis_url: str, celery_ws_app: Celery | None) -> Settings:
    """The settings your app's workers use (its ``CeleryWS(app, ...)`` when
    attached, else its ``app.conf`` and the environment), on the test Redis."""
    if celery_ws_app is None:
        return Settings.load(redis_url=celery_ws_redis_url)
    return settings_for(app=celery_ws_app).model_copy(update={"redis_url": celery_ws_redis_url})


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
def _celery_ws_servers() -> Iterator[ServerCache]:
    servers = ServerCache()
    yield servers
    servers.stop()


@pytest.fixture
def celery_ws_server(
    celery_ws_settings: Settings,
    celery_ws_revoke: Revoke | None,
    celery_ws_send_task: SendTask | None,
    _celery_ws_servers: ServerCache,
) -> ServerThread:
    return _celery_ws_servers.server(celery_ws_settings, celery_ws_revoke, celery_ws_send_task)


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


@pytest.fixture(scope="module")
def _celery_ws_worker_slot() -> Iterator[WorkerSlot]:
    slot = WorkerSlot()
    yield slot
    slot.stop()


@pytest.fixture
def celery_ws_worker(
    celery_ws_app: Celery | None, celery_ws_settings: Settings, _celery_ws_worker_slot: WorkerSlot
) -> Iterator[Any]:
    """An embedded worker (threads pool, 4 threads) for ``celery_ws_app``,
    kept for the module while the app and settings stay the same. The
    questions a test leaves open are cancelled when it ends."""
    if celery_ws_app is None:
        raise pytest.UsageError("override the celery_ws_app fixture to return your Celery app")
    worker = _celery_ws_worker_slot.worker(celery_ws_app, celery_ws_settings)
    before = open_questions(celery_ws_settings)
    yield worker
    cancel_questions(celery_ws_settings, open_questions(celery_ws_settings) - before)


@pytest.fixture
def celery_ws_answer(celery_ws_settings: Settings) -> Callable[..., UserConfirmation]:
    """``celery_ws_answer(task_id, proceed=True, data=..., feedback=...)``: see
    :func:`celery_ws.testing.answer`."""
    return functools.partial(answer, settings=celery_ws_settings)


@pytest.fixture
def celery_ws_auto_answer(celery_ws_settings: Settings) -> Callable[..., AutoAnswer]:
    """``with celery_ws_auto_answer(proceed=True, data=...):``: see
    :func:`celery_ws.testing.auto_answer`."""
    return functools.partial(auto_answer, settings=celery_ws_settings)
