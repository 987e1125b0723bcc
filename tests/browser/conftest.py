"""Browser fixtures: headless Debian Chromium driven by Playwright, and a real
``celery-ws serve`` subprocess a test can stop and start again on its port.

Skipped (with the reason) only when Chromium or the playwright package is
missing: ``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system Chromium is used).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_ws.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
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
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


class ServeProcess:
    """``python -m celery_ws serve`` on a fixed loopback port; open mode unless
    ``env`` sets ``CELERY_WS_SECRET``."""

    def __init__(self, redis_url: str, log_dir: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.env = env or {}
        self.port = port or free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        assert self.process is None, "already running"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CELERY_WS_", "WEBSOCKET_"))}  # open mode, our Redis only
        env.update(CELERY_WS_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1", **self.env)
        self.starts += 1
        self.log = self.log_dir / f"serve-{self.port}-{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery_ws", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "info"],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"celery-ws serve exited at start:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"celery-ws serve not ready after {_START_TIMEOUT}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM (clients see 1001 going away), then SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)


@pytest.fixture
def server(celery_ws_redis_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(celery_ws_redis_url, tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, "
                    "or set CELERY_WS_TEST_CHROMIUM)")
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
    page.set_default_timeout(15_000)
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
