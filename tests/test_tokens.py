"""Minting tokens where the settings live: ``issue_token(uid, app=app)``, the
current Celery app, ``celery -A app ws token``, and what a page is handed
(``connection_grant``: token, the public URL, expiry)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from celery import Celery, current_app

from celery_ws import Settings, SettingsError, issue_token
from celery_ws.tokens import TokenVerifier, connection_grant, websocket_url
from tests.processes import celery_ws_command, run
from tests.token_app import SECRET as APP_SECRET
from tests.token_app import app as token_app

ENV_SECRET = "the-environments-secret-0123456789abcdefgh"


@pytest.fixture(autouse=True)
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELERY_WS_SECRET", "CELERY_WS_TOKEN_TTL", "CELERY_WS_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def current(request: pytest.FixtureRequest) -> Iterator[Celery]:
    """``token_app`` as Celery's current app for one test, then the previous one again."""
    previous = current_app._get_current_object()
    token_app.set_current()
    try:
        yield token_app
    finally:
        previous.set_current()


def user_of(token: str, secret: str) -> str:
    return TokenVerifier(Settings.load(secret=secret)).verify(token).user_id


def test_issue_token_signs_with_the_apps_secret() -> None:
    token = issue_token("u-app", app=token_app)
    assert user_of(token, APP_SECRET) == "u-app"


def test_issue_token_reads_the_current_apps_settings(current: Celery) -> None:
    assert user_of(issue_token("u-current"), APP_SECRET) == "u-current"


def test_the_environment_wins_over_the_apps_settings(
    current: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_WS_SECRET", ENV_SECRET)
    assert user_of(issue_token("u-env"), ENV_SECRET) == "u-env"
    assert user_of(issue_token("u-env", app=token_app), ENV_SECRET) == "u-env"


def test_without_any_secret_the_error_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="CELERY_WS_SECRET"):
        issue_token("u-none", app=Celery("bare", set_as_current=False))


def test_connection_grant_carries_the_public_url_and_the_apps_ttl() -> None:
    before = int(time.time())
    grant = connection_grant("u-grant", app=token_app)
    assert grant["url"] == "wss://ws.example.com/"
    assert before + 90 <= int(grant["expires_at"]) <= int(time.time()) + 90
    identity = TokenVerifier(Settings.load(secret=APP_SECRET)).verify(str(grant["token"]))
    assert (identity.user_id, identity.expires_at) == ("u-grant", grant["expires_at"])


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({"public_url": "https://example.com/ws/"}, "wss://example.com/ws/"),
        ({"public_url": "http://127.0.0.1:8080"}, "ws://127.0.0.1:8080/"),
        ({"public_url": "wss://ws.example.com"}, "wss://ws.example.com/"),
        ({"host": "0.0.0.0", "port": 9000}, "ws://127.0.0.1:9000/"),
        ({"host": "::1", "port": 9000}, "ws://[::1]:9000/"),
    ],
)
def test_websocket_url_is_the_public_url_as_a_browser_opens_it(settings: dict[str, object], url: str) -> None:
    assert websocket_url(Settings.load(**settings)) == url


def test_celery_ws_token_reads_the_app_of_celery_dash_a() -> None:
    done = run([sys.executable, "-m", "celery", "-A", "tests.token_app", "ws", "token", "user-1"])
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert user_of(token, APP_SECRET) == "user-1"
    assert TokenVerifier(Settings.load(secret=APP_SECRET)).verify(token).expires_at <= time.time() + 90


def test_celery_ws_token_app_option_reads_the_app() -> None:
    done = run([*celery_ws_command(), "token", "user-2", "--app", "tests.token_app:app", "--ttl", "30"])
    assert done.returncode == 0, done.stderr
    identity = TokenVerifier(Settings.load(secret=APP_SECRET)).verify(done.stdout.strip())
    assert identity.user_id == "user-2"
    assert identity.expires_at <= time.time() + 30
