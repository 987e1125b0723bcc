"""The command-line reference, built at each docs build from the click
commands themselves (``celery_ws.cli.ws``): what ``--help`` prints is what
the page shows. ``<!-- cli-help -->`` on a page marks where it goes."""

from __future__ import annotations

from typing import Any

import click

from celery_ws.cli import ws

MARKER = "<!-- cli-help -->"
WIDTH = 100


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())


def reference() -> str:
    top = click.Context(ws, info_name="celery-ws", terminal_width=WIDTH, max_content_width=WIDTH)
    out = ["```text", ws.get_help(top), "```", ""]
    for name, command in sorted(ws.commands.items()):
        context = click.Context(command, info_name=name, parent=top)
        out += [f"## `celery-ws {name}` {{#{name}}}", "", "```text", command.get_help(context), "```", ""]
    return "\n".join(out)
