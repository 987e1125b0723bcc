"""Browser pages and malformed handshakes, attacked with a bare socket against
a real server: cross-site WebSocket hijacking of an open-mode server, DNS
rebinding past the Origin check, and repeated headers that used to reach the
code reading them (500, or 101 and then 1011, with a traceback)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest

from celery_ws import Settings, SettingsError, issue_token
from celery_ws.testing import ServerThread
from tests.helpers import seconds
from tests.rawws import TEXT, RawSocket, handshake_request

SECRET = "origin-tests-secret-0123456789abcdefghij"
HOST = "127.0.0.1"
REPLY_TIMEOUT = seconds(5)


async def status_of(
    server: ServerThread,
    headers: Sequence[tuple[str, str]] = (),
    *,
    path: str = "/",
    defaults: bool = True,
    host: str = HOST,
) -> int:
    """The HTTP status the server answers a request with; ``headers`` follow
    the usual upgrade headers (``Host: host:port`` first) unless ``defaults`` is False."""
    raw = await RawSocket.open(HOST, server.manager.port)
    try:
        request = handshake_request(host, server.manager.port, path, headers=headers, defaults=defaults)
        raw.writer.write(request)
        status, _ = await asyncio.wait_for(raw.read_response(), REPLY_TIMEOUT)
        return status
    finally:
        raw.abort()


def credentials(server: ServerThread) -> list[tuple[str, str]]:
    """What a legitimate client of ``server`` logs in with: a token in token mode."""
    settings = server.manager.settings
    if not settings.token_mode:
        return []
    return [("Authorization", f"Bearer {issue_token('u-legit', settings=settings)}")]


async def answers_ping(server: ServerThread, headers: Sequence[tuple[str, str]] = ()) -> bool:
    """Whether a raw client sending ``headers`` (and, in token mode, a good
    token) gets through the handshake and has its ``ping`` answered."""
    raw = await RawSocket.upgraded(HOST, server.manager.port, headers=[*headers, *credentials(server)])
    try:
        raw.send(json.dumps({"action": "ping"}))
        for _ in range(5):  # after a login: authenticated, subscription_confirmed, then the pong
            opcode, payload = await raw.recv(REPLY_TIMEOUT)
            if opcode != TEXT:
                return False
            if json.loads(payload)["type"] == "pong":
                return True
        return False
    finally:
        raw.abort()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[ServerThread]:
    server = ServerThread(settings).start()
    try:
        yield server
    finally:  # from a thread: this loop still has the test's aborted sockets to close
        await asyncio.to_thread(server.stop)


def module_server(settings: Settings) -> Iterator[ServerThread]:
    server = ServerThread(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_server(celery_ws_redis_url: str) -> Iterator[ServerThread]:
    """Open mode, nothing configured: what a developer runs on their machine."""
    yield from module_server(Settings.load(redis_url=celery_ws_redis_url))


@pytest.fixture(scope="module")
def token_server(celery_ws_redis_url: str) -> Iterator[ServerThread]:
    yield from module_server(Settings.load(redis_url=celery_ws_redis_url, secret=SECRET, auth_timeout=1))


# -- item 6: open mode accepts pages only from loopback and allowed_origins -------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "https://evil.example:8765",
        "null",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
    ],
)
async def test_open_mode_refuses_pages_from_other_sites(open_server, origin):
    assert await status_of(open_server, [("Origin", origin)]) == 403
    assert await answers_ping(open_server)  # clients without Origin (not browsers) still connect


@pytest.mark.parametrize(
    "origin", ["http://localhost:5173", "https://localhost", "http://127.0.0.1:8000", "http://[::1]:3000"]
)
async def test_open_mode_accepts_loopback_pages_on_any_port(open_server, origin):
    assert await answers_ping(open_server, [("Origin", origin)])


async def test_the_built_in_page_still_connects_in_open_mode(open_server):
    assert await status_of(open_server, path="/", defaults=False, headers=[("Host", HOST)]) == 200
    page = f"http://{HOST}:{open_server.manager.port}"
    assert await answers_ping(open_server, [("Origin", page)])


async def test_open_mode_accepts_listed_origins_and_listed_null(celery_ws_redis_url):
    settings = Settings.load(redis_url=celery_ws_redis_url, allowed_origins="http://devbox.lan:3000, null")
    async with serving(settings) as server:
        assert await answers_ping(server, [("Origin", "http://devbox.lan:3000")])
        assert await answers_ping(server, [("Origin", "null")])
        assert await status_of(server, [("Origin", "http://devbox.lan:3001")]) == 403


# -- item 7: the server's own page is its configured public_url, never the Host ------


@pytest.mark.parametrize("mode", ["open", "token"])
async def test_dns_rebinding_page_is_refused(celery_ws_redis_url, mode):
    secret = {"secret": SECRET} if mode == "token" else {}
    settings = Settings.load(redis_url=celery_ws_redis_url, allowed_origins="https://app.example", **secret)
    async with serving(settings) as server:
        # after rebinding, the attacker's page is "same origin" with the server:
        # its browser sends the attacker's name as both Origin and Host
        rebound = [("Origin", f"http://rebind.evil.example:{server.manager.port}")]
        assert await status_of(server, rebound, host="rebind.evil.example") == 403
        assert await answers_ping(server, [("Origin", "https://app.example")])


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("https://ws.example.com", "https://ws.example.com"),
        ("https://WS.example.com:443/socket/", "https://ws.example.com"),
        ("wss://ws.example.com:8443", "https://ws.example.com:8443"),
        ("http://[2001:db8::1]:8765", "http://[2001:db8::1]:8765"),
    ],
)
async def test_public_url_is_the_servers_own_page(celery_ws_redis_url, public_url, origin):
    settings = Settings.load(
        redis_url=celery_ws_redis_url, public_url=public_url, allowed_origins="https://app.example"
    )
    async with serving(settings) as server:
        assert await answers_ping(server, [("Origin", origin)])
        assert await status_of(server, [("Origin", "https://ws.example.com.evil.example")]) == 403


async def test_token_mode_without_a_list_lets_any_page_try_a_token(token_server):
    """Kept on purpose: a page from another site can open the socket but cannot
    get a user's token, so it is closed with 4401 before any event."""
    evil = [("Origin", "http://evil.example")]
    raw = await RawSocket.upgraded(HOST, token_server.manager.port, headers=evil)
    try:
        raw.send(json.dumps({"action": "auth", "token": "forged.token.here"}))
        assert await raw.close_code() == 4401
    finally:
        raw.abort()


@pytest.mark.parametrize(
    "value",
    [
        "ws.example.com",
        "ftp://ws.example.com",
        "https://",
        "https://ws:99999",
        "https://[::1",
        "https://ws.example.com:0",
    ],
)
def test_public_url_must_be_a_url_a_browser_can_open(value):
    with pytest.raises(SettingsError, match="CELERY_WS_PUBLIC_URL / ws_public_url"):
        Settings.load(public_url=value)


def test_public_url_from_the_environment_and_app_conf(monkeypatch):
    assert Settings.load({"ws_public_url": "https://conf.example"}).public_url == "https://conf.example"
    monkeypatch.setenv("CELERY_WS_PUBLIC_URL", "https://env.example")
    assert Settings.load({"ws_public_url": "https://conf.example"}).public_url == "https://env.example"


# -- item 9: a repeated header is a 400, never a traceback -------------------------------


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR or record.exc_info is not None
    ]


@pytest.mark.parametrize(
    "header", ["Host", "Upgrade", "Authorization", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version"]
)
async def test_repeated_handshake_header_is_a_400(token_server, caplog, header):
    [(_, bearer)] = credentials(token_server)
    # the usual upgrade headers are sent once already: a second copy repeats them
    extra = {
        "Host": [f"{HOST}:{token_server.manager.port}"],
        "Upgrade": ["websocket"],
        "Authorization": [bearer, bearer],
        "Origin": [f"http://{HOST}", "http://evil.example"],
        "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
        "Sec-WebSocket-Version": ["13"],
    }[header]
    with caplog.at_level(logging.INFO):
        assert await status_of(token_server, [(header, value) for value in extra]) == 400
    assert errors_logged(caplog) == []
    assert await answers_ping(token_server)


async def test_repeated_connection_header_is_not_an_error(token_server, caplog):
    """Connection is a list: two lines are one value, as websockets reads it."""
    with caplog.at_level(logging.INFO):
        assert await status_of(token_server, [("Connection", "Upgrade")]) == 101
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/status", "/", "/celery-ws.js", "/nope"]
)
async def test_repeated_headers_on_plain_http_never_500(token_server, caplog, path):
    host = ("Host", f"{HOST}:{token_server.manager.port}")
    requests = {
        "two Hosts": [host, host],
        "two Authorizations": [host, ("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
        "two Accepts (a list, so one value)": [host, ("Accept", "text/plain"), ("Accept", "*/*")],
    }
    with caplog.at_level(logging.INFO):
        statuses = {
            name: await status_of(token_server, headers, path=path, defaults=False)
            for name, headers in requests.items()
        }
    answered = 404 if path == "/nope" else 200
    assert list(statuses.values()) == [400, 400, answered], statuses
    assert errors_logged(caplog) == []
