"""Browser fixtures: headless Debian Chromium driven by Playwright, and a real
``celery-ws serve`` subprocess a test can stop and start again on its port.

Skipped (with the reason) only when Chromium or the playwright package is
missing: ``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system Chromium is used).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import seconds
from tests.processes import REPO, ServeProcess

SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = os.environ.get("CELERY_WS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server(celery_ws_redis_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(celery_ws_redis_url, tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set CELERY_WS_TEST_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; its console and page errors are printed when a test fails."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 960, "height": 720})
    page = context.new_page()
    page.set_default_timeout(seconds(15) * 1000)
    logs: list[str] = []
    page.on("console", lambda message: logs.append(f"console.{message.type}: {message.text}"))
    page.on("pageerror", lambda error: logs.append(f"pageerror: {error}"))
    page.console_logs = logs
    yield page
    print("\n".join(logs))
    context.close()


def screenshot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def html_site(body: bytes) -> Iterator[int]:
    """A loopback HTTP server answering every GET with the page ``body``: a
    page from an origin other than the celery-ws server's. Yields its port."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
