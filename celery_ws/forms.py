"""Typed answers: which fields of an answer do not fit its question's form.

A typed question (``answer_model=``) carries its model's JSON Schema as
``answer_schema``. The server refuses an answer that does not fit it with
``invalid_answer``; the terminal watcher checks the same before sending, and
``celery_ws.testing.answer`` refuses as the server would. All three name the
fields the same way, through :func:`answer_problems`.

A field is named by its path in the answer, dots between levels
(``address.city``). JSON Schema reports a missing required field on the
object that lacks it, and an unexpected one likewise; both are named here by
the field itself, so a person sees which input to fill or drop, never a bare
``data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator, ValidationError

from .exceptions import ProtocolError

__all__ = ["ANSWER_ROOT", "AnswerProblem", "answer_problems", "check_answer", "describe"]

#: the name of the answer as a whole, for a problem no single field has
ANSWER_ROOT = "data"


class AnswerProblem(NamedTuple):
    """One field of an answer that does not fit, and why."""

    field: str
    message: str


def answer_problems(schema: dict[str, Any], data: Any) -> list[AnswerProblem]:
    """Every problem of ``data`` against ``schema``, sorted by field; empty when it fits."""
    problems = {
        problem
        for error in Draft202012Validator(schema).iter_errors(data if data is not None else {})
        for problem in _named(error)
    }
    return sorted(problems)


def describe(problems: list[AnswerProblem]) -> str:
    """``field: why; field: why``, for an error message."""
    return "; ".join(f"{problem.field}: {problem.message}" for problem in problems)


def check_answer(schema: dict[str, Any], data: Any, *, callback_id: str) -> None:
    """Refuse an answer that does not fit the question's form as the server
    does, so the person can fix it while the task keeps waiting.

    Raises:
        ProtocolError: ``invalid_answer``, its ``fields`` naming each field that
            does not fit, and the message why.
    """
    problems = answer_problems(schema, data)
    if problems:
        raise ProtocolError(
            "invalid_answer",
            f"The answer does not fit the form: {describe(problems)}",
            callback_id=callback_id,
            fields=sorted({problem.field for problem in problems}),
        )


def _named(error: ValidationError) -> Iterator[AnswerProblem]:
    path = [str(part) for part in error.absolute_path]
    instance = error.instance if isinstance(error.instance, dict) else None
    schema: Any = error.schema
    if error.validator == "required" and instance is not None:
        required: Any = error.validator_value
        for name in required:
            if name not in instance:
                yield AnswerProblem(_join([*path, str(name)]), "is required")
        return
    if error.validator == "additionalProperties" and instance is not None:
        known = set(schema.get("properties", {}))
        extra = [name for name in instance if name not in known]
        if extra and not schema.get("patternProperties"):
            for name in extra:
                yield AnswerProblem(_join([*path, str(name)]), "is not a field of this form")
            return
    yield AnswerProblem(_join(path), error.message)


def _join(path: list[str]) -> str:
    return ".".join(path) or ANSWER_ROOT
