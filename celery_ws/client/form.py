"""A typed question's form, field by field, for a terminal: no I/O here.

A question asked with ``answer_model=`` carries its model's JSON Schema
(``answer_schema``, as pydantic writes it). :func:`form_fields` flattens it
into the fields a person fills one at a time: strings, numbers and integers
(with their bounds), booleans, enums, one level of nested objects (named
``parent.child``); anything else is typed as JSON. Each :class:`FormField`
turns a typed line into a value or says why it cannot (type, enum, bounds,
required), so a mistake is caught before anything is sent; what the form
cannot check on its own (a pattern, a rule of the model) is the server's, and
comes back as ``invalid_answer`` naming the fields to ask again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FormField", "assemble", "form_fields"]

_TRUE = {"y", "yes", "true", "1"}
_FALSE = {"n", "no", "false", "0"}
_KINDS = {"string", "integer", "number", "boolean"}


@dataclass(frozen=True)
class FormField:
    """One input of a typed question's form."""

    path: tuple[str, ...]
    kind: str  # string, integer, number, boolean, or json for anything else
    required: bool = False
    #: the model's default, shown and used for an empty line (None: none)
    default: tuple[Any] | None = None
    description: str | None = None
    choices: tuple[Any, ...] | None = None
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def hint(self) -> str:
        """What to type: ``rows (integer, at least 1, at most 100, required)``."""
        words = [f"one of: {', '.join(map(str, self.choices))}" if self.choices else self.kind]
        words += [_BOUND_WORDS[key].format(_number(value)) for key, value in self.bounds.items()]
        if self.kind == "boolean":
            words.append("y/n")
        if self.required and self.default is None:
            words.append("required")
        text = f"{self.name} ({', '.join(words)})"
        if self.description:
            text += f": {self.description}"
        if self.default is not None:
            text += f" [{_shown(self.default[0])}]"
        return text

    def parse(self, line: str) -> tuple[Any] | None:
        """The value typed on ``line``, as a 1-tuple; None to leave the field
        out (an empty line for a field with a default, or an optional one).

        Raises:
            ValueError: why the line is not a value of this field.
        """
        text = line.strip()
        if not text:
            if self.required and self.default is None:
                raise ValueError("a value is required")
            return None
        value = self._convert(text)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of: {', '.join(map(str, self.choices))}")
        self._check_bounds(value)
        return (value,)

    def _convert(self, text: str) -> Any:
        if self.choices is not None:
            return next((choice for choice in self.choices if str(choice) == text), text)
        if self.kind == "integer":
            try:
                return int(text)
            except ValueError:
                raise ValueError("must be a whole number") from None
        if self.kind == "number":
            try:
                number = float(text)
            except ValueError:
                raise ValueError("must be a number") from None
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            return number
        if self.kind == "boolean":
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError("answer y or n")
        if self.kind == "json":
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("must be JSON") from None
        return text

    def _check_bounds(self, value: Any) -> None:
        measured = len(value) if isinstance(value, str) else value
        if not isinstance(measured, int | float) or isinstance(measured, bool):
            return
        for key, bound in self.bounds.items():
            if not _BOUND_CHECKS[key](measured, bound):
                raise ValueError(f"must be {_BOUND_WORDS[key].format(_number(bound))}")


_BOUND_WORDS = {
    "minimum": "at least {}",
    "maximum": "at most {}",
    "exclusiveMinimum": "more than {}",
    "exclusiveMaximum": "less than {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
}
_BOUND_CHECKS = {
    "minimum": lambda value, bound: value >= bound,
    "maximum": lambda value, bound: value <= bound,
    "exclusiveMinimum": lambda value, bound: value > bound,
    "exclusiveMaximum": lambda value, bound: value < bound,
    "minLength": lambda value, bound: value >= bound,
    "maxLength": lambda value, bound: value <= bound,
}


def form_fields(schema: Mapping[str, Any]) -> list[FormField]:
    """The fields of a question's ``answer_schema``, in the model's order;
    one level of nested objects is flattened into ``parent.child`` fields."""
    return list(_fields(schema, schema, (), required=True, depth=0))


def assemble(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` to send, nested again from ``{"parent.child": value}``."""
    data: dict[str, Any] = {}
    for name, value in values.items():
        *parents, last = name.split(".")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return data


def _fields(
    root: Mapping[str, Any], schema: Mapping[str, Any], path: tuple[str, ...], *, required: bool, depth: int
) -> Iterable[FormField]:
    needed = set(schema.get("required", ()))
    for name, raw in schema.get("properties", {}).items():
        spec, nullable = _resolved(root, raw)
        inner = (*path, name)
        is_required = required and name in needed and not nullable
        if spec.get("type") == "object" and "properties" in spec and depth == 0:
            yield from _fields(root, spec, inner, required=is_required, depth=depth + 1)
            continue
        kind = spec.get("type") if spec.get("type") in _KINDS else "json"
        if "enum" in spec and "type" not in spec:
            kind = "string"
        yield FormField(
            path=inner,
            kind=str(kind),
            required=is_required,
            default=(raw["default"],) if "default" in raw and raw["default"] is not None else None,
            description=raw.get("description") or spec.get("description"),
            choices=tuple(spec["enum"]) if "enum" in spec else None,
            bounds={key: spec[key] for key in _BOUND_WORDS if key in spec},
        )


def _resolved(root: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """``spec`` with its ``$ref`` followed and an ``anyOf [X, null]`` (an
    Optional field) unwrapped to X; and whether null is allowed."""
    nullable = False
    options = spec.get("anyOf")
    if isinstance(options, list):
        others = [option for option in options if option.get("type") != "null"]
        nullable = len(others) < len(options)
        if len(others) == 1:
            spec = {**spec, **others[0]}
            spec.pop("anyOf", None)
    ref = spec.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        spec = {**root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}), **spec}
        spec.pop("$ref", None)
    return spec, nullable


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "y" if value else "n"
    return str(value)
