"""Plain HTTP on the WebSocket port: health, readiness, metrics, status, and
the browser client and page.

``websockets`` hands every request to ``process_request`` before the upgrade;
a request that asks to upgrade goes on to the WebSocket handshake when no
header is repeated and its ``Origin`` is allowed; anything else is answered
here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from http import HTTPStatus
from importlib.resources import files
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..protocol import dumps
from ..settings import Settings
from .metrics import Metrics

__all__ = ["HttpEndpoints", "OriginPolicy", "StatusSource"]

logger = logging.getLogger(__name__)


class StatusSource(Protocol):
    def get_status(self) -> dict[str, Any]: ...
    def metrics_exposition(self, accept: str) -> tuple[bytes, str]: ...
    async def redis_ok(self) -> bool: ...
    @property
    def ready(self) -> bool: ...
    @property
    def metrics(self) -> Metrics: ...


Handler = Callable[[ServerConnection, Request], Awaitable[Response]]

_STATIC = files("celery_ws").joinpath("static", "celery_ws")


def response(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    *,
    cache: str = "no-store",
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
            *(extra or []),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


def page_policy(html: bytes) -> list[tuple[str, str]]:
    """Headers for an HTML page: a Content-Security-Policy that allows only this
    origin and the page's own inline script and style (by hash), and no
    referrer, since the page's URL may carry a token."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        hashes[kind].append("'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'")
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self' " + " ".join(hashes[b"script"]),
            "style-src " + (" ".join(hashes[b"style"]) or "'none'"),
            "connect-src 'self' ws: wss:",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return [("Content-Security-Policy", policy), ("Referrer-Policy", "no-referrer")]


def json_response(status: HTTPStatus, value: Any) -> Response:
    return response(status, dumps(value) + b"\n", "application/json")


def text_response(status: HTTPStatus, text: str) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8")


#: headers that carry one value, which this server or websockets reads with
#: ``Headers.get()`` (raising ``MultipleValuesError`` on a repeat): a request
#: that repeats one is malformed (RFC 9110 §5.3; RFC 9112 §3.2 for Host), and
#: two copies could make a proxy and this server disagree about it
_SINGLE_VALUED = ("Host", "Upgrade", "Authorization", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version")


def repeated_header(headers: Headers) -> str | None:
    """The first single-valued header the request repeats, if any."""
    return next((name for name in _SINGLE_VALUED if len(headers.get_all(name)) > 1), None)


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_PAGE_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback_origin(origin: str) -> bool:
    """Whether a page on this machine sent ``origin``: http(s) on a loopback
    name, any port (the built-in page, a dev server)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK_HOSTS


def browser_origin(url: str) -> str:
    """The ``Origin`` a browser sends from a page at ``url`` (RFC 6454): scheme,
    lowercase host, and the port unless it is the scheme's default; a ws(s)://
    URL is taken as the http(s):// page on the same host. ``url`` is a setting
    already validated as an absolute URL."""
    parts = urlsplit(url)
    scheme = _PAGE_SCHEMES[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    port = parts.port
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """Which web pages may open a WebSocket, judged by the ``Origin`` header
    that browsers add to every handshake.

    A browser connects with the user's cookies and from the user's machine, so
    without this check any site the user visits could drive the server
    (cross-site WebSocket hijacking), including one on 127.0.0.1. Clients that
    send no ``Origin`` are not browsers and pass. Pages pass when they are on
    loopback, at the server's own ``public_url``, or listed; the request's
    ``Host`` proves nothing, since a DNS-rebinding page sends its own name there.
    """

    allowed: frozenset[str]
    #: every page passes: token mode with no list, where a page from another
    #: site can connect but cannot get a user's token
    any_page: bool = False

    @classmethod
    def build(
        cls, allowed_origins: Collection[str], *, public_url: str | None, token_mode: bool
    ) -> OriginPolicy:
        own = {browser_origin(public_url)} if public_url else set()
        return cls(frozenset({*allowed_origins, *own}), any_page=token_mode and not allowed_origins)

    def allows(self, origin: str | None) -> bool:
        return origin is None or self.any_page or origin in self.allowed or is_loopback_origin(origin)


class HttpEndpoints:
    def __init__(self, source: StatusSource, settings: Settings) -> None:
        self.source = source
        self.origins = OriginPolicy.build(
            settings.allowed_origins, public_url=settings.public_url, token_mode=settings.token_mode
        )
        self.routes: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics,
            "/status": self.status,
            "/celery-ws.js": self.static("celery-ws.js", "text/javascript; charset=utf-8"),
        }
        if settings.serve_page:
            self.routes["/"] = self.static("index.html", "text/html; charset=utf-8")

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if (repeated := repeated_header(request.headers)) is not None:
            return text_response(HTTPStatus.BAD_REQUEST, f"Repeated {repeated} header\n")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            origin = request.headers.get("Origin")
            if not self.origins.allows(origin):
                return self.refuse_origin(origin)
            return None
        handler = self.routes.get(urlsplit(request.path).path)
        if handler is None:
            return text_response(HTTPStatus.NOT_FOUND, "Not found\n")
        return await handler(connection, request)

    def refuse_origin(self, origin: str | None) -> Response:
        """A browser hides a refused handshake's status from the page (it sees
        a close with 1006), so the server says why: logged at INFO with the
        origins that would pass, and counted as ``rejected_origin``."""
        self.source.metrics.connection_outcomes.labels("rejected_origin").inc()
        logger.info(
            "WebSocket handshake refused: Origin %r is not allowed (allowed: %s; loopback pages always "
            "pass; set CELERY_WS_ALLOWED_ORIGINS)",
            origin,
            ", ".join(sorted(self.origins.allowed)) or "none listed",
        )
        return text_response(HTTPStatus.FORBIDDEN, "Origin not allowed (see CELERY_WS_ALLOWED_ORIGINS)\n")

    async def healthz(self, connection: ServerConnection, request: Request) -> Response:
        """Alive and able to reach Redis; a load balancer's liveness probe."""
        redis_ok = await self.source.redis_ok()
        status = self.source.get_status()
        body = {
            "status": "ok" if redis_ok else "unavailable",
            "redis": redis_ok,
            "connections": status["active_connections"],
        }
        return json_response(HTTPStatus.OK if redis_ok else HTTPStatus.SERVICE_UNAVAILABLE, body)

    async def readyz(self, connection: ServerConnection, request: Request) -> Response:
        """Ready for new connections: reading events and not shutting down."""
        ready = self.source.ready
        return json_response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, {"ready": ready})

    async def metrics(self, connection: ServerConnection, request: Request) -> Response:
        # Accept is a list: repeated lines are one value joined by commas (RFC 9110 §5.3)
        body, content_type = self.source.metrics_exposition(", ".join(request.headers.get_all("Accept")))
        return response(HTTPStatus.OK, body, content_type)

    async def status(self, connection: ServerConnection, request: Request) -> Response:
        return json_response(HTTPStatus.OK, self.source.get_status())

    def static(self, name: str, content_type: str) -> Handler:
        async def serve(connection: ServerConnection, request: Request) -> Response:
            resource = _STATIC.joinpath(name)
            if not resource.is_file():
                return text_response(HTTPStatus.NOT_FOUND, "Not found\n")
            body = resource.read_bytes()
            extra = page_policy(body) if content_type.startswith("text/html") else None
            return response(HTTPStatus.OK, body, content_type, cache="no-cache", extra=extra)

        return serve
