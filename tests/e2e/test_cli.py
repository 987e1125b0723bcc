"""The command line, run as real subprocesses: ``celery-ws status``,
``celery -A app ws serve`` (Celery's ``celery.commands`` entry point),
``python -m celery_ws serve``, ``celery-ws token``, ``--version``, the
open-mode refusal on a public address, and JSON log lines without tokens.
``tests/test_wheel.py`` runs them again from a plain install of the wheel."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from celery_ws import __version__
from celery_ws.client import Client
from celery_ws.logs import JsonFormatter, configure_logging, redact
from celery_ws.settings import Settings
from celery_ws.testing import ServerThread
from celery_ws.testing.redis_server import free_port
from celery_ws.tokens import issue_token
from tests.helpers import seconds
from tests.processes import ServeProcess, celery_ws_command, http_get, run

SECRET = "a-test-secret-that-is-long-enough-for-hs256!"


# -- celery-ws status -----------------------------------------------------------------


def test_status_prints_a_running_servers_figures(celery_ws_server: ServerThread) -> None:
    url = f"http://127.0.0.1:{celery_ws_server.manager.port}"
    done = run([*celery_ws_command(), "status", "--url", url])
    assert done.returncode == 0, done.stderr
    for figure in ("running", "active_connections", "pending_callbacks", "redis_connected", "uptime"):
        assert figure in done.stdout
    assert str(celery_ws_server.manager.port) in done.stdout

    as_json = run(
        [*celery_ws_command(), "status", "--url", celery_ws_server.url, "--json"]
    )  # ws:// works too
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert figures["running"] is True
    assert figures["port"] == celery_ws_server.manager.port


def test_status_exits_1_when_the_server_is_unreachable() -> None:
    done = run([*celery_ws_command(), "status", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2"])
    assert done.returncode == 1
    assert "cannot read" in done.stderr
    assert "/status" in done.stderr


# -- --version -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [*celery_ws_command(), "--version"],
        [sys.executable, "-m", "celery_ws", "--version"],
        [sys.executable, "-m", "celery", "ws", "--version"],  # celery-ws's version, not Celery's
    ],
    ids=["celery-ws", "python -m celery_ws", "celery ws"],
)
def test_version_is_the_packages(command: list[str]) -> None:
    done = run(command)
    assert (done.returncode, done.stdout) == (0, f"celery-ws {__version__}\n"), done.stderr


# -- starting the server ---------------------------------------------------------------


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


def test_celery_ws_subcommand_of_celery_serves(celery_ws_redis_url: str, logs: Path) -> None:
    """``celery -A tests.prefork_app ws serve``: the app comes from ``-A``."""
    server = ServeProcess(
        celery_ws_redis_url, logs, command=[sys.executable, "-m", "celery", "-A", "tests.prefork_app", "ws"]
    ).start()
    try:
        code, body = http_get(f"{server.http_url}/healthz")
        assert code == 200
        assert json.loads(body)["redis"] is True
    finally:
        server.stop()
    assert server.log is not None
    output = server.log.read_text()
    assert "no --app" not in output, "celery -A's app was not passed to serve"


def test_python_m_celery_ws_serves(celery_ws_redis_url: str, logs: Path) -> None:
    server = ServeProcess(celery_ws_redis_url, logs, command=[sys.executable, "-m", "celery_ws"]).start()
    try:
        code, body = http_get(f"{server.http_url}/healthz")
        assert code == 200
        assert json.loads(body)["status"] == "ok"
    finally:
        server.stop()


async def test_token_command_mints_a_token_the_server_accepts(celery_ws_redis_url: str, logs: Path) -> None:
    done = run([*celery_ws_command(), "token", "user-cli", "--ttl", "120"], CELERY_WS_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.count(".") == 2  # a JWT

    server = ServeProcess(celery_ws_redis_url, logs, env={"CELERY_WS_SECRET": SECRET}).start()
    try:
        async with Client(server.url, token=token, timeout=seconds(10)) as client:
            welcome = await client.wait_for_event("authenticated")
            assert welcome["user_id"] == "user-cli"
        async with Client(server.url, token=token[:-4] + "AAAA", timeout=seconds(10)) as forged:
            await forged.closed.wait()
            assert forged.auth_error is not None
    finally:
        server.stop()


def test_token_command_without_a_secret_fails() -> None:
    done = run([*celery_ws_command(), "token", "user-cli"])
    assert done.returncode != 0
    assert "CELERY_WS_SECRET" in done.stderr


def test_open_mode_is_refused_on_a_public_address(celery_ws_redis_url: str) -> None:
    done = run(
        [*celery_ws_command(), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        CELERY_WS_REDIS_URL=celery_ws_redis_url,
    )
    assert done.returncode != 0
    assert "--insecure" in done.stderr
    assert "CELERY_WS_SECRET" in done.stderr


# -- logging ---------------------------------------------------------------------------


async def test_json_log_lines_are_json_and_hold_no_token(celery_ws_redis_url: str, logs: Path) -> None:
    token = issue_token("user-logs", ttl=120, settings=Settings.load(secret=SECRET))
    server = ServeProcess(
        celery_ws_redis_url,
        logs,
        env={"CELERY_WS_SECRET": SECRET},
        args=["--log-format", "json", "--log-level", "debug"],
    ).start()
    try:
        async with Client(server.url, token=token, timeout=seconds(10)) as client:
            await client.wait_for_event("authenticated")
        async with connect(f"{server.url}/?token={token}x", proxy=None) as refused:  # a bad token
            await refused.wait_closed()
    finally:
        server.stop()
    assert server.log is not None
    text = server.log.read_text()
    assert token not in text
    assert token[-20:] not in text
    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert records, text
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}, record
    assert any(r["logger"] == "celery_ws.server.manager" and "listening" in r["message"] for r in records)


def test_tokens_are_redacted_even_from_websockets_debug_lines(celery_ws_redis_url: str) -> None:
    """The ``websockets`` library logs each request line at DEBUG, query string
    included; an operator who turns that on still gets no token in the log."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, logging.getLogger("websockets").level)
    handler = configure_logging("debug", "json", stream=stream)
    logging.getLogger("websockets").setLevel(logging.DEBUG)
    settings = Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)
    token = issue_token("user-redact", ttl=120, settings=settings)
    server = ServerThread(settings).start()
    try:
        import asyncio

        async def visit() -> None:
            async with Client(server.url, token=token, timeout=seconds(10)) as client:
                await client.wait_for_event("authenticated")

        asyncio.run(visit())
    finally:
        server.stop()
        root.removeHandler(handler)
        logging.captureWarnings(False)
        root.setLevel(saved[0])
        logging.getLogger("websockets").setLevel(saved[1])
    text = stream.getvalue()
    assert "token=[redacted]" in text, "expected websockets' request line in the debug log"
    assert token not in text
    for line in text.splitlines():
        json.loads(line)


def test_redact() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert (
        redact(f"GET /?token={jwt}&last_event_id=1-0 HTTP/1.1")
        == "GET /?token=[redacted]&last_event_id=1-0 HTTP/1.1"
    )
    assert redact("GET /ws/?access_token=abc") == "GET /ws/?access_token=[redacted]"
    assert redact(f"Authorization: Bearer {jwt}") == "Authorization: Bearer [redacted]"
    assert redact(f"closing: {jwt} is expired") == "closing: [redacted] is expired"
    assert redact("redis://:hunter2@redis:6379/0") == "redis://:[redacted]@redis:6379/0"
    assert redact("redis://redis:6379/0 and 1-0") == "redis://redis:6379/0 and 1-0"


def test_json_formatter_includes_exceptions_redacted() -> None:
    try:
        raise ValueError("bad url ws://x/?token=secret123")
    except ValueError:
        record = logging.LogRecord(
            "celery_ws.x", logging.ERROR, __file__, 1, "failed for %s", ("?token=abc",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "celery_ws.x"
    assert entry["message"] == "failed for ?token=[redacted]"
    assert "secret123" not in line
    assert "ValueError" in entry["exception"]
    assert "\n" not in line


@pytest.fixture(autouse=True)
def _no_stray_handlers() -> Iterator[None]:
    """configure_logging() in this process must not leak into other tests."""
    before = list(logging.getLogger().handlers)
    yield
    for handler in list(logging.getLogger().handlers):
        if handler not in before:
            logging.getLogger().removeHandler(handler)
