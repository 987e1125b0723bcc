"""The Celery app a real ``celery worker -P prefork`` subprocess runs in tests."""

from __future__ import annotations

import os

from celery import Celery

from celery_ws import CeleryWS

REDIS_URL = os.environ.get("CELERY_WS_REDIS_URL", "redis://127.0.0.1:6379/0")
#: the broker may be another server (RabbitMQ, or a Redis a fault test leaves alone)
BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)

app = Celery(
    "prefork_tests",
    broker=BROKER_URL,
    backend=os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL),
    include=["tests.tasks"],
)
app.conf.update(
    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True, ws_progress_interval=0.05
)
CeleryWS(app)
