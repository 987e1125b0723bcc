"""Typed answers' field names: what the server, the watcher and the testing
helper call a field that does not fit, checked on the schemas pydantic writes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from celery_ws.forms import AnswerProblem, answer_problems, describe


class Address(BaseModel):
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=1, le=100)
    mode: Literal["append", "replace"] = "append"
    note: str | None = None
    ship_to: Address


SCHEMA = Order.model_json_schema()


def test_a_fitting_answer_has_no_problems():
    assert answer_problems(SCHEMA, {"rows": 3, "ship_to": {"city": "Lyon", "zip_code": "69001"}}) == []


def test_missing_fields_are_named_themselves_also_when_nested():
    assert answer_problems(SCHEMA, {}) == [
        AnswerProblem("rows", "is required"),
        AnswerProblem("ship_to", "is required"),
    ]
    assert answer_problems(SCHEMA, None) == answer_problems(SCHEMA, {})
    nested = answer_problems(SCHEMA, {"rows": 1, "ship_to": {"zip_code": "69001"}})
    assert nested == [AnswerProblem("ship_to.city", "is required")]


def test_wrong_values_and_unknown_fields_are_named_with_the_reason():
    problems = answer_problems(
        SCHEMA, {"rows": 0, "mode": "merge", "colour": "red", "ship_to": {"city": "Lyon", "zip_code": "x"}}
    )
    assert [problem.field for problem in problems] == ["colour", "mode", "rows", "ship_to.zip_code"]
    text = describe(problems)
    assert "colour: is not a field of this form" in text
    assert "rows: 0 is less than the minimum of 1" in text
    assert "'merge' is not one of ['append', 'replace']" in text


def test_an_answer_that_is_not_an_object_is_named_data():
    assert [problem.field for problem in answer_problems(SCHEMA, [1, 2])] == ["data"]
