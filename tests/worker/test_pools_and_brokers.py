"""The same task on every pool, with Redis or RabbitMQ as the Celery broker,
while Redis carries celery-ws' events."""

from __future__ import annotations

import socket
import uuid

import pytest
from celery import Celery

from celery_ws import CeleryWS
from tests.helpers import seconds
from tests.processes import WorkerProcess

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker(request, celery_ws_redis_url) -> str:
    if request.param == "redis":
        return celery_ws_redis_url
    if not _rabbitmq_up():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (this test needs the machine's RabbitMQ)")
    return RABBITMQ_URL


@pytest.fixture(scope="module")
def sender(broker, celery_ws_redis_url) -> Celery:
    """A web app's Celery app, publishing to ``broker``, with CeleryWS attached
    so that ``task_sent`` is stored before each message leaves."""
    app = Celery(
        "sender", broker=broker, backend=celery_ws_redis_url, include=["tests.tasks"], set_as_current=False
    )  # the suite's own app stays the current one
    app.conf.broker_connection_retry_on_startup = True
    app.loader.import_default_modules()
    CeleryWS(app, redis_url=celery_ws_redis_url)
    return app


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
async def test_progress_question_and_result_on_every_pool(
    sender, broker, celery_ws_redis_url, celery_ws_client, tmp_path, user, pool
):
    queue = f"{pool}-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        sender,
        celery_ws_redis_url,
        tmp_path,
        queue,
        broker_url=broker,
        pool=pool,
        env={"CELERY_RESULT_BACKEND": celery_ws_redis_url},
    ).start()
    try:
        ask = sender.tasks["tests.tasks.report_and_ask"]
        async with celery_ws_client(user_id=user) as client:
            result = ask.apply_async_for(user, (5,), queue=queue)
            request = await client.wait_for(
                lambda f: f.get("task_id") == result.id and f.get("callback_id"), timeout=seconds(20)
            )
            await client.confirm(request["callback_id"], True, pool)
            done = await client.wait_for_event("task_succeeded", task_id=result.id, timeout=seconds(20))
        types = [f["type"] for f in client.frames if f.get("task_id") == result.id]
        assert types[:2] == ["task_sent", "task_started"]
        assert {"task_progress", "task_step_result", "confirmation_answered"} <= set(types)
        assert done["result"]["feedback"] == pool
    finally:
        worker.stop()
