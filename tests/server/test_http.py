"""Plain HTTP on the WebSocket port, over real HTTP against real servers:
/healthz (also with Redis stopped and started again), /readyz, /metrics (parsed
with prometheus_client's own parser, and moving as events flow), /status, 404;
the ``celery-ws.v1`` subprotocol and permessage-deflate."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from celery_ws.client import Client
from celery_ws.protocol import SUBPROTOCOL
from celery_ws.settings import Settings
from celery_ws.testing import ServerThread
from celery_ws.testing.redis_server import RedisServer
from tests import tasks
from tests.helpers import seconds

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
EVENT_TIMEOUT = seconds(20)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_url(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.manager.port}"


def get(
    url: str, headers: dict[str, str] | None = None, timeout: float = seconds(5)
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; 4xx/5xx are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as reply:
            return reply.status, dict(reply.headers.items()), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def scrape(server: ServerThread) -> Samples:
    status, headers, body = get(f"{http_url(server)}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_status(url: str, expected: int, timeout: float = seconds(10)) -> int:
    """Poll ``url`` until it answers ``expected``; returns the last status seen."""
    deadline = time.monotonic() + timeout
    status = get(url)[0]
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status = get(url)[0]
    return status


@pytest.fixture(scope="module")
def own_server(celery_ws_redis_url: str) -> Iterator[ServerThread]:
    """A server no other test talks to, so connection counts are exact."""
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url)).start()
    yield server
    server.stop()


# -- health and readiness -------------------------------------------------------------


def test_healthz_and_readyz(celery_ws_server: ServerThread) -> None:
    status, headers, body = get(f"{http_url(celery_ws_server)}/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["redis"] is True
    assert isinstance(health["connections"], int)

    status, _, body = get(f"{http_url(celery_ws_server)}/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True}


def test_healthz_is_503_while_redis_is_down_and_200_again_after() -> None:
    with RedisServer() as redis_server:
        server = ServerThread(Settings.load(redis_url=redis_server.url)).start()
        try:
            base = http_url(server)
            assert get(f"{base}/healthz")[0] == 200
            assert wait_status(f"{base}/readyz", 200) == 200

            redis_server.stop()
            started = time.monotonic()
            status, _, body = get(f"{base}/healthz")
            assert status == 503, body
            assert json.loads(body) == {"status": "unavailable", "redis": False, "connections": 0}
            assert time.monotonic() - started < 3.0, "the health check must answer quickly without Redis"
            assert wait_status(f"{base}/readyz", 503) == 503, "not ready while the event reader lost Redis"

            redis_server.start()  # the same port
            assert wait_status(f"{base}/healthz", 200, timeout=seconds(15)) == 200
            assert wait_status(f"{base}/readyz", 200, timeout=seconds(15)) == 200
            assert server.manager.get_status()["redis_reconnects"] >= 1
        finally:
            server.stop()


# -- metrics --------------------------------------------------------------------------


def test_metrics_exposition_is_prometheus_text(celery_ws_server: ServerThread) -> None:
    samples = scrape(celery_ws_server)
    names = {name for name, _ in samples}
    for expected in (
        "celery_ws_active_connections",
        "celery_ws_pending_confirmations",
        "celery_ws_send_failures_total",
        "celery_ws_slow_clients_dropped_total",
        "celery_ws_redis_reconnects_total",
        "celery_ws_event_delivery_seconds_count",
        "celery_ws_confirmation_answer_seconds_count",
    ):
        assert expected in names, f"{expected} missing from /metrics"
    # OpenMetrics for a scraper that asks for it
    status, headers, body = get(
        f"{http_url(celery_ws_server)}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_metrics_move_when_events_flow(own_server: ServerThread, worker: Any, user: str) -> None:
    before = await asyncio.to_thread(scrape, own_server)
    async with (
        Client(own_server.url, timeout=EVENT_TIMEOUT) as watcher,
        Client(own_server.url, timeout=EVENT_TIMEOUT) as other,
    ):
        await watcher.subscribe(user_id=user)
        await other.ping()
        during = await asyncio.to_thread(scrape, own_server)
        assert (
            value(during, "celery_ws_active_connections") == value(before, "celery_ws_active_connections") + 2
        )

        reported = tasks.report.apply_async_for(user, (5,), {"step": "count"})
        await watcher.wait_for_event("task_succeeded", task_id=reported.id)
        asked = tasks.ask.apply_async_for(user, (), {"timeout": 20})
        question = await watcher.wait_for(lambda f: f.get("task_id") == asked.id and f.get("callback_id"))
        await asyncio.sleep(0.05)  # a measurable answer latency
        assert (await watcher.confirm(question["callback_id"], True))["type"] == "confirmation_received"
        await watcher.wait_for_event("task_succeeded", task_id=asked.id)
        delivered = [f for f in watcher.frames if f.get("task_id") in (reported.id, asked.id) and "id" in f]

    after = await asyncio.to_thread(scrape, own_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("celery_ws_connections_total", outcome="accepted") == 2
    assert value(after, "celery_ws_active_connections") == value(before, "celery_ws_active_connections")
    assert moved("celery_ws_messages_in_total", action="subscribe") == 1
    assert moved("celery_ws_messages_in_total", action="ping") == 1
    assert moved("celery_ws_messages_in_total", action="confirm") == 1
    for type_ in (
        "task_sent",
        "task_started",
        "task_progress",
        "task_step_result",
        "confirmation_answered",
        "task_succeeded",
    ):
        assert moved("celery_ws_messages_out_total", type=type_) >= 1, type_
    sent_by_type = sum(moved("celery_ws_messages_out_total", type=t) for t in {f["type"] for f in delivered})
    assert sent_by_type >= len(delivered)
    assert moved("celery_ws_event_delivery_seconds_count") >= len(delivered)
    assert moved("celery_ws_event_delivery_seconds_sum") >= 0
    assert moved("celery_ws_confirmation_answer_seconds_count") == 1
    assert moved("celery_ws_confirmation_answer_seconds_sum") >= 0.05
    assert moved("celery_ws_slow_clients_dropped_total") == 0
    # /status reads the same registry
    status = json.loads(get(f"{http_url(own_server)}/status")[2])
    assert status["connections_accepted"] == value(after, "celery_ws_connections_total", outcome="accepted")
    assert status["messages_in_subscribe"] == value(after, "celery_ws_messages_in_total", action="subscribe")


# -- status, static, unknown paths ----------------------------------------------------


def test_status_is_json(celery_ws_server: ServerThread) -> None:
    status, headers, body = get(f"{http_url(celery_ws_server)}/status")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    figures = json.loads(body)
    assert figures["running"] is True
    assert figures["port"] == celery_ws_server.manager.port
    assert figures["redis_connected"] is True
    assert figures["mode"] == "open"
    for key in ("active_connections", "pending_callbacks", "uptime", "host"):
        assert key in figures
    assert figures["uptime"] > 0


def test_unknown_path_is_404_and_static_files_are_served(celery_ws_server: ServerThread) -> None:
    base = http_url(celery_ws_server)
    assert get(f"{base}/nope")[0] == 404
    assert get(f"{base}/healthz/extra")[0] == 404
    status, headers, body = get(f"{base}/celery-ws.js")
    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert body
    assert get(f"{base}/healthz?probe=1")[0] == 200  # the query string does not change the route


# -- subprotocol and compression ------------------------------------------------------


async def test_subprotocol_selected_when_offered(celery_ws_server: ServerThread) -> None:
    async with connect(celery_ws_server.url, subprotocols=[SUBPROTOCOL], proxy=None) as ws:
        assert ws.subprotocol == "celery-ws.v1"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "celery-ws.v1"
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), seconds(5)))["type"] == "pong"


async def test_a_client_offering_no_subprotocol_still_connects(celery_ws_server: ServerThread) -> None:
    async with connect(celery_ws_server.url, proxy=None) as ws:  # like a browser's new WebSocket(url)
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), seconds(5)))["type"] == "pong"


async def test_an_unknown_subprotocol_alone_still_connects_without_one(
    celery_ws_server: ServerThread,
) -> None:
    async with connect(celery_ws_server.url, subprotocols=["celery-ws.v99"], proxy=None) as ws:
        assert ws.subprotocol is None


async def test_compression_on_by_default(celery_ws_server: ServerThread) -> None:
    assert celery_ws_server.manager.settings.compression is True
    async with connect(celery_ws_server.url, proxy=None) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        # per message: no zlib state kept between messages, so idle connections stay small
        assert "permessage-deflate" in extensions
        assert "server_no_context_takeover" in extensions
        await ws.send(json.dumps({"action": "ping", "text": "x" * 2000}))
        pong = json.loads(await asyncio.wait_for(ws.recv(), seconds(5)))
        assert pong["original_data"]["text"] == "x" * 2000


async def test_compression_off_with_the_setting(celery_ws_settings: Settings) -> None:
    server = await asyncio.to_thread(
        lambda: ServerThread(celery_ws_settings.model_copy(update={"compression": False})).start()
    )
    try:
        async with connect(server.url, proxy=None) as ws:  # the client offers permessage-deflate
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), seconds(5)))["type"] == "pong"
    finally:
        await asyncio.to_thread(server.stop)


def test_compression_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_WS_COMPRESSION", "0")
    assert Settings.load().compression is False


def test_the_page_is_served_with_a_strict_policy(celery_ws_server: ServerThread) -> None:
    import base64
    import hashlib
    import re

    status, headers, body = get(f"{http_url(celery_ws_server)}/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    inline = re.findall(rb"<script>(.*?)</script>", body, re.S)
    assert inline, "the page has its script inline"
    for script in inline:  # each inline script is allowed by its own hash, nothing else is
        digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert headers["Referrer-Policy"] == "no-referrer"  # the page's URL may carry ?token=
