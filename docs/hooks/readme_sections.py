"""Pages that show a section of README.md as README has it, so the two cannot
disagree while README still carries the text: ``<!-- readme: Title -->`` on a
page is replaced, at each build, by the body of README's section of that
title (the heading's own line left out, the page gives its own; the section's
sub-headings moved up to follow the page's).

README's links are made to work on the site: an anchor of README becomes the
page that covers it, a path under ``docs/`` a link relative to the page, any
other path of the repository plain text. A title README no longer has is a
build warning (so ``--strict`` fails): the section moved, and the page must
say where.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"^<!-- readme: (?P<title>.+?) -->$", re.M)
HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<title>.+)$")
LINK = re.compile(r"(?P<image>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
#: README's anchors, and the pages (from docs/) that cover them
ANCHORS = {
    "#configuration": "reference/configuration.md",
    "#deploy": "reference/deploy.md",
    "#operations": "reference/metrics.md",
    "#in-a-django-project": "how-to/django.md",
    "#deferred-questions-ask": "how-to/tasks.md#deferred-questions-ask",
    "#wire-protocol": "reference/protocol.md",
    "#delivery-guarantees": "reference/guarantees.md",
    "#security": "reference/security.md",
    "#in-a-task": "how-to/tasks.md",
    "#cancellation": "how-to/tasks.md#cancellation",
    "#confirmations": "how-to/tasks.md#confirmations",
    "#from-anywhere-else": "how-to/publish.md",
    "#testing-your-own-code": "how-to/testing.md",
    "#clients": "reference/browser-client.md",
}

log = logging.getLogger("mkdocs.hooks.readme_sections")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if not MARKER.search(markdown):
        return markdown
    readme = README.read_text().splitlines()
    here = posixpath.dirname(page.file.src_uri)

    def include(match: re.Match[str]) -> str:
        body = section(readme, match["title"])
        if body is None:
            log.warning("%s: README.md has no section %r any more", page.file.src_uri, match["title"])
            return ""
        return LINK.sub(lambda link: _link(link, here), body)

    return MARKER.sub(include, markdown)


def section(lines: list[str], title: str) -> str | None:
    """The body of the section titled ``title``, headings inside moved up so
    that its sub-sections are ``##``; None when README has no such section."""
    start = level = None
    body: list[str] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if start is None:
            if heading and heading["title"] == title:
                start, level = True, len(heading["level"])
            continue
        if heading and level is not None and len(heading["level"]) <= level:
            break
        if heading and level is not None:
            line = "#" * (len(heading["level"]) - level + 1) + " " + heading["title"]
        body.append(line)
    return "\n".join(body).strip() + "\n" if start else None


def _link(match: re.Match[str], here: str) -> str:
    image, text, target = match["image"], match["text"], match["target"]
    if target.startswith(("http://", "https://", "mailto:")):
        return match[0]
    if target.startswith("#"):
        page = ANCHORS.get(target)
        return f"[{text}]({posixpath.relpath(page, here or '.')})" if page else text
    if target.startswith("docs/"):
        return f"{image}[{text}]({posixpath.relpath(target.removeprefix('docs/'), here or '.')})"
    return text  # a file of the repository, not of the site: its name stays as text
