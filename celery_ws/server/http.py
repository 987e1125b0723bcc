"""Plain HTTP on the WebSocket port: health, readiness, metrics, status, and
the browser client and page.

``websockets`` hands every request to ``process_request`` before the upgrade;
a request that asks to upgrade goes on to the WebSocket handshake, anything
else is answered here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib.resources import files
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..protocol import dumps

__all__ = ["HttpEndpoints", "StatusSource"]


class StatusSource(Protocol):
    def get_status(self) -> dict[str, Any]: ...
    def metrics_exposition(self, accept: str) -> tuple[bytes, str]: ...
    async def redis_ok(self) -> bool: ...
    @property
    def ready(self) -> bool: ...


Handler = Callable[[ServerConnection, Request], Awaitable[Response]]

_STATIC = files("celery_ws").joinpath("static")


def response(status: HTTPStatus, body: bytes, content_type: str, *, cache: str = "no-store",
             extra: list[tuple[str, str]] | None = None) -> Response:
    headers = Headers([
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", cache),
        ("X-Content-Type-Options", "nosniff"),
        *(extra or []),
    ])
    return Response(status.value, status.phrase, headers, body)


_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


def page_policy(html: bytes) -> list[tuple[str, str]]:
    """Headers for an HTML page: a Content-Security-Policy that allows only this
    origin and the page's own inline script and style (by hash), and no
    referrer, since the page's URL may carry a token."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        hashes[kind].append("'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'")
    policy = "; ".join([
        "default-src 'none'",
        "script-src 'self' " + " ".join(hashes[b"script"]),
        "style-src " + (" ".join(hashes[b"style"]) or "'none'"),
        "connect-src 'self' ws: wss:",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return [("Content-Security-Policy", policy), ("Referrer-Policy", "no-referrer")]


def json_response(status: HTTPStatus, value: Any) -> Response:
    return response(status, dumps(value) + b"\n", "application/json")


def origin_allowed(request: Request, allowed: list[str]) -> bool:
    """The ``Origin`` check at the handshake: no list allows all; a client that
    sends no Origin (not a browser) passes; so does a page of this server's own
    (the built-in page), whose Origin names the host it connects to."""
    origin = request.headers.get("Origin")
    if not allowed or origin is None or origin in allowed:
        return True
    return urlsplit(origin).netloc == request.headers.get("Host")


class HttpEndpoints:
    def __init__(self, source: StatusSource, *, serve_page: bool, allowed_origins: list[str]) -> None:
        self.source = source
        self.allowed_origins = allowed_origins
        self.routes: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics,
            "/status": self.status,
            "/celery-ws.js": self.static("celery-ws.js", "text/javascript; charset=utf-8"),
        }
        if serve_page:
            self.routes["/"] = self.static("index.html", "text/html; charset=utf-8")

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not origin_allowed(request, self.allowed_origins):
                return response(HTTPStatus.FORBIDDEN, b"Origin not allowed\n", "text/plain; charset=utf-8")
            return None
        handler = self.routes.get(urlsplit(request.path).path)
        if handler is None:
            return response(HTTPStatus.NOT_FOUND, b"Not found\n", "text/plain; charset=utf-8")
        return await handler(connection, request)

    async def healthz(self, connection: ServerConnection, request: Request) -> Response:
        """Alive and able to reach Redis; a load balancer's liveness probe."""
        redis_ok = await self.source.redis_ok()
        status = self.source.get_status()
        body = {"status": "ok" if redis_ok else "unavailable", "redis": redis_ok,
                "connections": status["active_connections"]}
        return json_response(HTTPStatus.OK if redis_ok else HTTPStatus.SERVICE_UNAVAILABLE, body)

    async def readyz(self, connection: ServerConnection, request: Request) -> Response:
        """Ready for new connections: reading events and not shutting down."""
        ready = self.source.ready
        return json_response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, {"ready": ready})

    async def metrics(self, connection: ServerConnection, request: Request) -> Response:
        body, content_type = self.source.metrics_exposition(request.headers.get("Accept", ""))
        return response(HTTPStatus.OK, body, content_type)

    async def status(self, connection: ServerConnection, request: Request) -> Response:
        return json_response(HTTPStatus.OK, self.source.get_status())

    def static(self, name: str, content_type: str) -> Handler:
        async def serve(connection: ServerConnection, request: Request) -> Response:
            resource = _STATIC.joinpath(name)
            if not resource.is_file():
                return response(HTTPStatus.NOT_FOUND, b"Not found\n", "text/plain; charset=utf-8")
            body = resource.read_bytes()
            extra = page_policy(body) if content_type.startswith("text/html") else None
            return response(HTTPStatus.OK, body, content_type, cache="no-cache", extra=extra)
        return serve
