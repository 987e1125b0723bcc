"""The configuration page's entries, built at each docs build from
``celery_ws.settings.Settings`` (names, environment variables, types, bounds,
defaults) and ``docs/reference/settings.yml`` (what each one does).

A setting of the code without an entry in the file, or an entry that names no
setting, is a build warning, and ``mkdocs build --strict`` fails on it: the
page cannot drift from the code. ``<!-- settings -->`` on a page marks
where they go.
"""

from __future__ import annotations

import logging
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo

from celery_ws.settings import CONF_PREFIX, Settings

MARKER = "<!-- settings -->"
DESCRIPTIONS = Path(__file__).resolve().parent.parent / "reference" / "settings.yml"

log = logging.getLogger("mkdocs.hooks.settings_table")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, entries(yaml.safe_load(DESCRIPTIONS.read_text())))


def entries(sections: dict[str, dict[str, str]]) -> str:
    fields = Settings.model_fields
    described = [name for section in sections.values() for name in section]
    for name in fields.keys() - set(described):
        log.warning("setting %r has no description in %s", name, DESCRIPTIONS)
    for name in set(described) - fields.keys():
        log.warning("%s describes %r, which is no setting of celery_ws.settings.Settings", DESCRIPTIONS, name)
    out = []
    for title, section in sections.items():
        out += [f"## {title}", ""]
        out += [_entry(name, fields[name], text) for name, text in section.items() if name in fields]
    return "\n".join(out)


def _entry(name: str, field: FieldInfo, text: str) -> str:
    choices = getattr(field.validation_alias, "choices", ())
    variables = ", ".join(f"`{alias}`" for alias in choices if str(alias).isupper())
    facts = [
        f"**environment** {variables}",
        f"**app.conf** `{CONF_PREFIX}{name}`",
        f"**type** {_type(field)}",
        f"**default** {_default(field.default)}",
    ]
    return f"### `{name}` {{#{name}}}\n\n{' · '.join(facts)}\n\n{' '.join(text.split())}\n"


def _type(field: FieldInfo) -> str:
    text = _annotation(field.annotation)
    bounds = [_bound(item) for item in field.metadata]
    return text + "".join(f", {bound}" for bound in bounds if bound)


def _annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [_annotation(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" or unset" if type(None) in args else "")
    if origin is typing.Literal:
        return " or ".join(f"`{arg}`" for arg in args)
    if origin is list:
        return "comma-separated list"
    names = {str: "text", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation)).replace("SecretStr", "secret text")


def _bound(item: Any) -> str:
    for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        value = getattr(item, attribute, None)
        if value is not None:
            return f"{sign} {value:g}"
    pattern = getattr(item, "pattern", None)
    return f"matching `{pattern}`" if pattern else ""


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "empty" if not value else ", ".join(f"`{item}`" for item in value)
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"
