"""Typed answers: the question carries a JSON Schema, answers that do not fit
are refused while the task keeps waiting, the task gets a model instance."""

from __future__ import annotations

import pytest

from tests import tasks

pytestmark = pytest.mark.usefixtures("worker")


async def test_typed_answer_is_validated_and_reaches_the_task_as_a_model(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask_typed.delay_for(user)
        request = await client.wait_for(lambda f: f.get("callback_id") and f.get("task_id") == result.id)
        schema = request["answer_schema"]
        assert schema["properties"]["rows"]["type"] == "integer"
        assert "rows" in schema["required"]

        bad = await client.request(
            {
                "action": "confirm",
                "callback_id": request["callback_id"],
                "proceed": True,
                "data": {"rows": "many", "note": 5},
            },
            "confirmation_received",
        )
        assert bad["type"] == "error"
        assert bad["code"] == "invalid_answer"
        assert bad["fields"] == ["note", "rows"]
        missing = await client.request(
            {"action": "confirm", "callback_id": request["callback_id"], "proceed": True, "data": {}},
            "confirmation_received",
        )
        assert missing["code"] == "invalid_answer"
        assert missing["fields"] == ["rows"]  # the missing field by its own name, not "data"
        assert "rows: is required" in missing["message"]
        assert not result.ready()  # still waiting

        good = await client.request(
            {
                "action": "confirm",
                "callback_id": request["callback_id"],
                "proceed": True,
                "data": {"rows": 12, "note": "only the first dozen"},
            },
            "confirmation_received",
        )
        assert good["type"] == "confirmation_received"
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"] == {"model": "RowLimit", "rows": 12, "note": "only the first dozen"}


async def test_refusing_a_typed_question_needs_no_data(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask_typed.delay_for(user)
        request = await client.wait_for(lambda f: f.get("callback_id") and f.get("task_id") == result.id)
        await client.confirm(request["callback_id"], False, "no")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"] == {"model": None}
