"""What a page hears when the connection goes wrong, and token renewal, in a
real Chromium against a real ``celery-ws serve``: a handshake refused by the
Origin check reaches ``onError`` (and the server's log and counter) instead of
a silent endless "reconnecting"; a token function's token is renewed before
it expires, without a disconnect and without losing or repeating an event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests import tasks
from tests.helpers import seconds
from tests.processes import http_get

from .conftest import CHROMIUM, CHROMIUM_ARGS, ServeProcess, html_site, screenshot
from .test_page import SECRET, token_server  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.timeout(120)]

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None

#: a name that is not loopback, resolved by Chromium to 127.0.0.1: a page from
#: "another site" that still runs on this machine
SITE = "app.test"


@pytest.fixture(scope="module")
def named_browser(browser: Any) -> Iterator[Any]:
    """Chromium resolving ``SITE`` to loopback (the plain fixture first, for its skips)."""
    chromium = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {SITE} 127.0.0.1"],
    )
    yield chromium
    chromium.close()


@pytest.fixture
def site_page(named_browser: Any, server: ServeProcess) -> Iterator[tuple[Any, str]]:
    """A page at http://app.test:PORT/ that loads the server's celery-ws.js."""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>elsewhere</title>"
        f"<script src='{server.http_url}/celery-ws.js'></script></head><body></body></html>"
    ).encode()
    with html_site(body) as port:
        context = named_browser.new_context()
        page = context.new_page()
        page.set_default_timeout(seconds(15) * 1000)
        page.goto(f"http://{SITE}:{port}/")
        yield page, f"http://{SITE}:{port}"
        context.close()


def test_a_page_from_an_origin_the_server_refuses_hears_why(site_page, server):
    page, origin = site_page
    page.evaluate(
        """url => {
          window.errors = []; window.states = [];
          window.client = new CeleryWS.Client(url, {
            userId: "u1", minDelay: 50, maxDelay: 200,
            onError: e => errors.push(e), onStateChange: s => states.push(s),
          });
          client.connect();
        }""",
        server.url + "/",
    )
    page.wait_for_function("errors.length > 0")
    page.wait_for_timeout(1000)  # several more refused attempts: still one report
    out = page.evaluate("({errors, state: client.state})")
    assert [e["code"] for e in out["errors"]] == ["handshake_refused"]
    assert "CELERY_WS_ALLOWED_ORIGINS" in out["errors"][0]["message"]
    assert out["state"] == "reconnecting"  # it keeps trying, with backoff
    page.evaluate("client.close()")

    status, body = http_get(f"{server.http_url}/status")
    assert status == 200
    assert json.loads(body)["connections_rejected_origin"] >= 2
    assert f"Origin '{origin}' is not allowed" in server.logs()


def test_the_built_in_page_says_the_origin_was_refused(named_browser, server):
    """The same page from a name the server does not list: a notice, not a silent spinner."""
    context = named_browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{SITE}:{server.port}/?user=u1")
        expect(page.locator("#notice")).to_contain_text("The server refused the WebSocket handshake")
        expect(page.locator("#state")).to_have_text("reconnecting")
        screenshot(page, "origin-refused")
    finally:
        context.close()


def test_a_token_function_is_renewed_before_the_token_expires(page, token_server, user, worker):  # noqa: F811
    from celery_ws.settings import Settings
    from celery_ws.tokens import issue_token

    settings = Settings.load(secret=SECRET)
    minted: list[str] = []

    def mint() -> str:
        minted.append(issue_token(user, ttl=5, settings=settings))
        return minted[-1]

    page.expose_function("mintToken", mint)
    page.goto(f"{token_server.http_url}/")  # loads /celery-ws.js
    page.evaluate(
        """url => {
          window.log = {progress: [], errors: [], states: [], done: []};
          window.client = new CeleryWS.Client(url, {
            token: () => window.mintToken(),
            onProgress: e => log.progress.push(e.message), onError: e => log.errors.push(e),
            onStateChange: s => log.states.push(s), onDone: e => log.done.push(e.type),
          });
          client.connect();
        }""",
        token_server.url + "/",
    )
    page.wait_for_function("() => log.states.includes('open')")
    result = tasks.slow_progress.delay_for(user, steps=120, delay=0.1)  # about 12 s: past two expiries
    # waiting in Playwright, which answers the page's mintToken() calls meanwhile
    page.wait_for_function("() => log.done.length === 1", timeout=seconds(30) * 1000)
    assert result.get(timeout=seconds(5)) == "finished"
    out = page.evaluate("log")
    assert len(minted) >= 3  # renewed every 4 s or so (80 % of 5 s)
    assert out["states"] == ["connecting", "open"]  # never reconnecting, never closed
    assert out["errors"] == []
    assert out["progress"] == [f"Step {i} of 120" for i in range(1, 121)]  # each event once, in order
    page.evaluate("client.close()")
