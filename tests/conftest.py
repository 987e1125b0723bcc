"""Real parts only: the suite's own redis-server (celery_ws.testing), an
embedded Celery worker from pytest-celery's fixtures, a celery-ws server on a
free loopback port, and real WebSocket clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_ws import CeleryWS, Publisher

QUEUE = "celery-ws-tests"


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
    return {"concurrency": 4, "shutdown_timeout": 30}


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


@pytest.fixture
def user() -> str:
    """A user id no other test uses."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def publisher(celery_ws_settings: Any) -> Iterator[Publisher]:
    pub = Publisher(settings=celery_ws_settings)
    yield pub
    pub.close()
