"""Tests of the tutorial's tasks with celery-ws' pytest plugin, on a Redis,
a worker and answers of their own: ``python -m pytest test_tasks.py``."""

import pytest
import tasks


@pytest.fixture
def celery_ws_app(celery_ws_redis_url):
    """The app under test, on the redis-server the plugin starts."""
    tasks.app.conf.update(broker_url=celery_ws_redis_url, result_backend=celery_ws_redis_url)
    return tasks.app


def test_clean_rows_deletes_when_alice_agrees(celery_ws_worker, celery_ws_answer):
    result = tasks.clean_rows.delay_for("alice", "orders.csv", rows=20)
    celery_ws_answer(result.id, proceed=True, feedback="fine")  # waits for the question
    assert result.get(timeout=30) == {"deleted": 2, "feedback": "fine", "by": "alice"}


def test_clean_rows_keeps_the_rows_when_alice_says_no(celery_ws_worker, celery_ws_answer):
    result = tasks.clean_rows.delay_for("alice", "orders.csv", rows=20)
    celery_ws_answer(result.id, proceed=False)
    assert result.get(timeout=30)["deleted"] == 0


def test_clean_rows_in_eager_mode(celery_ws_app, celery_ws_auto_answer):
    """No worker: the task runs inside delay_for(), so the answer is arranged first."""
    celery_ws_app.conf.task_always_eager = True
    try:
        with celery_ws_auto_answer(proceed=True):
            result = tasks.clean_rows.delay_for("alice", "orders.csv", rows=20)
    finally:
        celery_ws_app.conf.task_always_eager = False
    assert result.get()["deleted"] == 2
