"""``celery_ws.testing.answer`` and ``auto_answer``: a test answers its task's
questions through Redis, as a person through a server would, with a real
worker and under ``task_always_eager`` (where the task asks in the test's own
thread, so the answer is arranged before it runs)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from celery import Celery

from celery_ws import (
    CeleryWS,
    ProgressTask,
    ProtocolError,
    Settings,
    TaskStepResult,
    confirm_step,
    final_result,
)
from celery_ws.testing import answer, auto_answer
from tests import tasks
from tests.helpers import seconds


@pytest.mark.usefixtures("worker")
def test_answer_a_running_tasks_question(celery_ws_settings: Settings, user: str) -> None:
    result = tasks.ask.delay_for(user)
    sent = answer(result.id, False, feedback="not today", settings=celery_ws_settings, timeout=seconds(10))
    assert (sent.proceed, sent.feedback, sent.answered_by) == (False, "not today", user)
    got = result.get(timeout=seconds(10))
    assert (got["proceed"], got["feedback"], got["answered_by"]) == (False, "not today", user)


@pytest.mark.usefixtures("worker")
def test_a_typed_answer_that_does_not_fit_is_refused_naming_its_fields(
    celery_ws_settings: Settings, user: str
) -> None:
    result = tasks.ask_typed.delay_for(user)
    with pytest.raises(ProtocolError) as refused:
        answer(result.id, data={"note": 5}, settings=celery_ws_settings, timeout=seconds(10))
    assert refused.value.code == "invalid_answer"
    assert refused.value.details["fields"] == ["note", "rows"]  # "rows" is missing: named, not "data"
    assert not result.ready()  # still waiting, as after a server's refusal
    answer(result.id, data={"rows": 7}, settings=celery_ws_settings, timeout=seconds(10))
    assert result.get(timeout=seconds(10)) == {"model": "RowLimit", "rows": 7, "note": ""}


@pytest.mark.usefixtures("worker", "celery_ws_server")
def test_answer_a_deferred_question_by_the_first_tasks_id(celery_ws_settings: Settings, user: str) -> None:
    result = tasks.import_rows_later.delay_for(user, "orders.csv", 10)
    answer(result.id, True, feedback="go", settings=celery_ws_settings, timeout=seconds(10))
    assert final_result(result, timeout=seconds(20)) == {"written": 9, "feedback": "go"}


@pytest.mark.usefixtures("worker")
def test_auto_answer_answers_only_the_task_it_is_given(celery_ws_settings: Settings, user: str) -> None:
    other = tasks.ask.delay_for(user, timeout=seconds(20))
    mine = tasks.ask.apply_async_for(user, task_id=f"mine-{uuid.uuid4().hex}")
    with auto_answer(feedback="auto", task_id=mine.id, settings=celery_ws_settings) as answering:
        assert mine.get(timeout=seconds(10))["feedback"] == "auto"
    assert [a.callback_id for a in answering.answers] == [mine.get()["callback_id"]]
    assert not other.ready()
    answer(other.id, False, settings=celery_ws_settings, timeout=seconds(10))
    assert other.get(timeout=seconds(10))["proceed"] is False


class Rows(tasks.RowLimit):
    """The eager app's form: the suite's RowLimit."""


@pytest.fixture(scope="module")
def eager_app(celery_ws_redis_url: str) -> Celery:
    """A user's app run with task_always_eager: ``delay()`` runs the task at once,
    in the caller's thread, on no worker."""
    app = Celery(
        "eager_users_app", broker=celery_ws_redis_url, backend=celery_ws_redis_url, set_as_current=False
    )
    app.conf.update(task_always_eager=True, ws_key_prefix=f"eager{uuid.uuid4().hex[:8]}")
    CeleryWS(app)

    @app.task(base=ProgressTask, bind=True, name="eager_users_app.review")
    def review(self: ProgressTask, rows: int) -> dict[str, Any]:
        for i in range(rows):
            self.progress(i + 1, rows)
        question = TaskStepResult(step="review", message=f"Write {rows} rows?", status="waiting")
        return confirm_step(question, timeout=60, answer_model=Rows).model_dump()

    return app


def test_auto_answer_under_always_eager(eager_app: Celery, user: str) -> None:
    review = eager_app.tasks["eager_users_app.review"]
    started = time.monotonic()
    with auto_answer(data={"rows": 2, "note": "eager"}, feedback="fine", app=eager_app) as answering:
        result = review.delay_for(user, 2)
    assert time.monotonic() - started < seconds(10)  # answered, not timed out (60 s)
    assert result.get()["feedback"] == "fine"
    assert result.get()["data"] == {"rows": 2, "note": "eager"}
    assert answering.answers[0].answered_by == user
    assert CeleryWS.for_app(eager_app) is not None
    assert CeleryWS.for_app(eager_app).settings.key_prefix.startswith("eager")  # type: ignore[union-attr]


def test_answer_from_a_thread_started_before_an_eager_task(eager_app: Celery, user: str) -> None:
    review = eager_app.tasks["eager_users_app.review"]
    task_id = f"eager-{uuid.uuid4().hex}"
    answering = threading.Thread(
        target=answer,
        args=(task_id, False),
        kwargs={"feedback": "no", "app": eager_app, "timeout": seconds(10)},
        daemon=True,
    )
    answering.start()
    result = review.apply_async_for(user, (3,), task_id=task_id)
    answering.join(seconds(10))
    assert (result.get()["proceed"], result.get()["feedback"]) == (False, "no")
