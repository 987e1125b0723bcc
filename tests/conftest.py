"""Real parts only: the suite's own redis-server (celery_ws.testing), an
embedded Celery worker from pytest-celery's fixtures, a celery-ws server on a
free loopback port, and real WebSocket clients.

Layout: ``worker/`` tests what runs inside Celery, ``server/`` the server,
``e2e/`` several real processes together; the shared core and the package
itself are tested at the top. Helper modules stay here at the top
(``tests.tasks`` is also what Celery workers import by name).

Every wait is a multiple of ``tests.helpers.seconds()``, scaled by
``CELERY_WS_TEST_TIMEOUT_FACTOR``; so is each test's pytest-timeout limit.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from celery import Celery

from celery_ws import CeleryWS, Publisher
from celery_ws.client import Client
from celery_ws.server.continuations import celery_sender
from tests.helpers import TIMEOUT_FACTOR, seconds

QUEUE = "celery-ws-tests"


#: set by .ci/run, where every tool a skip names is installed: a skip there is a failure
NO_SKIPS = os.environ.get("CELERY_WS_TEST_NO_SKIPS") == "1"
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if NO_SKIPS and report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CELERY_WS_TEST_NO_SKIPS=1 and {len(_skipped)} tests skipped: {', '.join(_skipped[:5])}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scale each test's pytest-timeout limit (a ``timeout`` mark, else
    ``--timeout``, else pyproject's ``timeout``) by ``CELERY_WS_TEST_TIMEOUT_FACTOR``."""
    if TIMEOUT_FACTOR == 1:
        return
    default = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    for item in items:
        mark = item.get_closest_marker("timeout")
        options = dict(mark.kwargs) if mark else {}
        limit = float(mark.args[0]) if mark and mark.args else float(options.pop("timeout", default))
        options.pop("timeout", None)
        if limit > 0:
            item.add_marker(pytest.mark.timeout(limit * TIMEOUT_FACTOR, **options), append=False)


@pytest.fixture(scope="session")
def celery_config(celery_ws_redis_url: str) -> dict[str, Any]:
    return {
        "broker_url": celery_ws_redis_url,
        "result_backend": celery_ws_redis_url,
        "task_default_queue": QUEUE,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "ws_progress_interval": 0.05,
    }


@pytest.fixture(scope="session")
def celery_includes() -> list[str]:
    return ["tests.tasks"]


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {"concurrency": 4, "shutdown_timeout": seconds(30)}


@pytest.fixture(scope="session")
def app(celery_session_app: Celery, celery_ws_redis_url: str) -> Celery:
    CeleryWS(celery_session_app, redis_url=celery_ws_redis_url)
    return celery_session_app


@pytest.fixture(scope="session")
def worker(app: Celery, celery_session_worker: Any) -> Any:
    return celery_session_worker


@pytest.fixture(scope="session")
def celery_ws_revoke(app: Celery) -> Any:
    async def revoke(task_id: str) -> None:
        await asyncio.to_thread(app.control.revoke, task_id)

    return revoke


@pytest.fixture(scope="session")
def celery_ws_send_task(app: Celery) -> Any:
    return celery_sender(app)


@pytest.fixture
def celery_ws_client(
    celery_ws_client: Callable[..., AbstractAsyncContextManager[Client]],
) -> Callable[..., AbstractAsyncContextManager[Client]]:
    """The plugin's client, waiting ``seconds(10)`` by default (the client's own 10 s, scaled)."""

    def connect(*args: Any, **options: Any) -> AbstractAsyncContextManager[Client]:
        options.setdefault("timeout", seconds(10))
        return celery_ws_client(*args, **options)

    return connect


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def publisher(celery_ws_settings: Any) -> Iterator[Publisher]:
    pub = Publisher(settings=celery_ws_settings)
    yield pub
    pub.close()
