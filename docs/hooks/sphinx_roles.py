"""Docstrings in celery_ws cross-reference with Sphinx roles
(``:class:`~celery_ws.Publisher```), which Markdown leaves as text: turn each
into a link to the object when the API reference documents it, into plain
code otherwise; and reST's ``::`` before a literal block becomes ``:``. Runs
before mkdocs-autorefs resolves links (its ``on_env``)."""

from __future__ import annotations

import html
import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>(?P<text>[^<]*)</code>")
TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[\w.]+)>$")


def _autoref(match: re.Match[str]) -> str:
    text = html.unescape(match["text"])
    titled = TITLED.match(text)
    if titled:
        title, target = titled["title"], titled["target"]
    else:
        target = text.removeprefix("~")
        title = target.rsplit(".", 1)[-1] if text.startswith("~") else target
    return f'<autoref identifier="{html.escape(target)}" optional><code>{html.escape(title)}</code></autoref>'


def on_page_content(html_text: str, **kwargs: Any) -> str:
    # a paragraph that introduces a literal block ends with reST's "::"
    return ROLE.sub(_autoref, html_text).replace("::</p>", ":</p>")
