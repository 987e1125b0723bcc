"""The terminal watcher's form for typed questions, read from the schemas
pydantic writes: which fields it asks, and what it makes of each typed line."""

from __future__ import annotations

from enum import IntEnum

import pytest
from pydantic import BaseModel, Field

from celery_ws.client.form import assemble, form_fields


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Contact(BaseModel):
    email: str
    phone: str | None = None


class Request(BaseModel):
    name: str = Field(min_length=2, max_length=5)
    level: Level = Level.LOW
    tags: list[str] = Field(default_factory=list)
    backup: Contact | None = None


SCHEMA = Request.model_json_schema()


def test_fields_in_the_models_order_nested_ones_flattened():
    fields = {field.name: field for field in form_fields(SCHEMA)}
    assert list(fields) == ["name", "level", "tags", "backup.email", "backup.phone"]
    assert fields["name"].hint() == "name (string, at least 2 characters, at most 5 characters, required)"
    assert fields["level"].hint() == "level (one of: 1, 2) [1]"
    assert fields["tags"].kind == "json"  # a list: typed as JSON
    assert not fields["backup.email"].required  # backup itself is optional


@pytest.mark.parametrize(
    ("name", "line", "value", "error"),
    [
        ("name", "x", None, "must be at least 2 characters"),
        ("name", "abcdef", None, "must be at most 5 characters"),
        ("name", "", None, "a value is required"),
        ("name", " Ann ", ("Ann",), None),
        ("level", "2", (2,), None),  # an integer enum: the typed text matched to its value
        ("level", "3", None, "must be one of: 1, 2"),
        ("level", "", None, None),  # the default: left out, the model fills it
        ("tags", '["a", "b"]', (["a", "b"],), None),
        ("tags", "[a", None, "must be JSON"),
    ],
)
def test_each_line_becomes_a_value_or_a_reason(name, line, value, error):
    field = {field.name: field for field in form_fields(SCHEMA)}[name]
    if error is None:
        assert field.parse(line) == value
    else:
        with pytest.raises(ValueError, match=error):
            field.parse(line)


def test_the_answer_is_nested_again_and_fits_the_model():
    data = assemble({"name": "Ann", "level": 2, "backup.email": "a@example.com"})
    assert data == {"name": "Ann", "level": 2, "backup": {"email": "a@example.com"}}
    assert Request.model_validate(data).backup == Contact(email="a@example.com")
