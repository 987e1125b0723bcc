"""Logging for the ``celery-ws`` command: text or JSON lines, secrets redacted.

The library itself only calls ``logging.getLogger(__name__)``; an application
that embeds the server configures logging its own way. ``configure_logging``
is what ``celery-ws serve`` (and ``celery ws serve``) call.

Whatever the format, every line passes through :func:`redact` first: a
WebSocket request may carry ``?token=...`` in its query string, an
``Authorization: Bearer ...`` header, and a Redis URL may hold a password, and
none of them belongs in a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from .redis_urls import parse_redis_url

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["JsonFormatter", "RedactingFormatter", "configure_logging", "redact", "settings_summary"]

LogFormat = Literal["text", "json"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REDACTED = "[redacted]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # query strings: ?token=..., &access_token=..., also URL-encoded in a message
    (re.compile(r"(?i)((?:^|[?&;\s\"'])(?:access_)?token=)[^&\s\"';]+"), r"\1" + _REDACTED),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1" + _REDACTED),
    # JWTs wherever they appear (header.payload.signature, header starts with {")
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), _REDACTED),
    # passwords in URLs: redis://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), r"\1" + _REDACTED + "@"),
)
#: handlers installed here, replaced (not stacked) when called again
_INSTALLED: list[logging.Handler] = []


def redact(text: str) -> str:
    """``text`` without tokens, bearer credentials, JWTs or URL passwords."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """The usual one-line text format, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    level: str = "info", fmt: LogFormat = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as
    text or JSON lines; the ``websockets`` library's own loggers stay at WARNING.

    Calling it again replaces the handler it installed before. Returns the handler.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use 'text' or 'json'")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else RedactingFormatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in _INSTALLED:
        root.removeHandler(old)
    _INSTALLED[:] = [handler]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


def settings_summary(settings: Settings) -> str:
    """How a server is configured, in one line for its start: the mode, which
    Redis (host, port, database; never its password) and key prefix, whether
    it serves the page, which browser origins may connect. Enough to tell at a
    glance why a worker's events do not arrive (another database or prefix) or
    why a page is refused."""
    public = f" and {settings.public_url}" if settings.public_url else ""
    if settings.token_mode and not settings.allowed_origins:
        origins = "any page (with a token)"
    else:
        origins = f"{', '.join(settings.allowed_origins) or 'none listed'} (besides loopback{public})"
    return (
        f"{'token' if settings.token_mode else 'open'} mode, Redis {_redis_location(settings.redis_url)}, "
        f"key prefix {settings.key_prefix!r}, page {'on' if settings.serve_page else 'off'}, "
        f"allowed origins: {origins}"
    )


def _redis_location(url: str) -> str:
    return parse_redis_url(url).describe()
