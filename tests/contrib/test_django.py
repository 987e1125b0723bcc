"""celery_ws.contrib.django with Django's own test tools (TestCase, its test
client, override_settings): the token view, the template tag, settings from
Django's settings, static files found where celery-ws serve finds them, and
the rest of celery_ws importable without Django."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core import checks
from django.template import Context, Template
from django.test import TestCase, override_settings

import celery_ws
from celery_ws import Settings
from celery_ws.client import Client
from celery_ws.contrib.django import user_id, ws_settings
from celery_ws.testing import ServerThread
from celery_ws.tokens import TokenVerifier
from tests.helpers import seconds

from .conftest import PUBLIC_URL, SECRET

PACKAGE = Path(celery_ws.__file__).resolve().parent


def verify(token: str, secret: str = SECRET) -> Any:
    return TokenVerifier(Settings.load(secret=secret)).verify(token)


def username_of(user: User) -> str:
    """A CELERY_WS_USER_ID_FUNCTION: the username instead of the primary key."""
    return f"user:{user.get_username()}"


def full_name_of(user: User) -> str:
    """A CELERY_WS_USER_ID_FUNCTION that can give an id the server refuses (an empty one)."""
    return str(user.get_full_name())


async def authenticated_as(url: str, token: str) -> str:
    async with Client(url, token=token, timeout=seconds(10)) as client:
        welcome = await client.wait_for_event("authenticated")
    return str(welcome["user_id"])


@pytest.fixture
def token_server(request: pytest.FixtureRequest, celery_ws_redis_url: str) -> Any:
    """A token-mode celery-ws server with the Django project's secret."""
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)).start()
    request.cls.server = server
    yield server
    server.stop()


class TokenViewTests(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.alice = User.objects.create_user("alice", password="alice-password")

    def test_anonymous_gets_json_401_not_a_redirect(self) -> None:
        response = self.client.get("/ws/token/")
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "not_authenticated"

    def test_signed_in_user_gets_token_url_and_expiry(self) -> None:
        assert self.client.login(username="alice", password="alice-password")
        before = int(time.time())
        response = self.client.get("/ws/token/")
        assert response.status_code == 200
        assert "no-cache" in response["Cache-Control"]
        grant = response.json()
        assert set(grant) == {"token", "url", "expires_at"}
        assert grant["url"] == "wss://ws.example.com/live/"  # CELERY_WS_PUBLIC_URL, as a WebSocket URL
        identity = verify(grant["token"])
        assert identity.user_id == str(self.alice.pk)
        assert identity.expires_at == grant["expires_at"]
        assert before + 120 <= grant["expires_at"] <= time.time() + 120  # CELERY_WS_TOKEN_TTL

    def test_only_get(self) -> None:
        self.client.force_login(self.alice)
        assert self.client.post("/ws/token/").status_code == 405

    @override_settings(CELERY_WS_USER_ID_FUNCTION="tests.contrib.test_django.username_of")
    def test_the_user_id_function_names_the_tokens_user(self) -> None:
        self.client.force_login(self.alice)
        assert verify(self.client.get("/ws/token/").json()["token"]).user_id == "user:alice"
        assert user_id(self.alice) == "user:alice"

    @override_settings(CELERY_WS_USER_ID_FUNCTION="tests.contrib.test_django.full_name_of")
    def test_a_user_id_the_server_would_refuse_is_an_error_naming_the_function(self) -> None:
        with pytest.raises(ValueError, match=r"full_name_of gave ''"):
            user_id(self.alice)

    @override_settings(
        CELERY_WS_SECRET="another-secret-from-override-settings-0123456789",
        CELERY_WS_TOKEN_TTL=30,
        CELERY_WS_PUBLIC_URL="http://127.0.0.1:9999",
    )
    def test_settings_come_from_django_settings(self) -> None:
        self.client.force_login(self.alice)
        grant = self.client.get("/ws/token/").json()
        assert grant["url"] == "ws://127.0.0.1:9999/"
        assert verify(grant["token"], "another-secret-from-override-settings-0123456789").expires_at <= (
            time.time() + 30
        )

    @override_settings(CELERY_WS_SECRET=None)
    def test_without_a_secret_the_view_says_so_and_the_check_warns(self) -> None:
        self.client.force_login(self.alice)
        response = self.client.get("/ws/token/")
        assert (response.status_code, response.json()["error"]) == (503, "not_configured")
        assert [m.id for m in checks.run_checks()] == ["celery_ws.W001"]

    @override_settings(CELERY_WS_PUBLIC_URL="ftp://nowhere")
    def test_a_bad_setting_fails_the_system_check_naming_it(self) -> None:
        [error] = checks.run_checks()
        assert error.id == "celery_ws.E001"
        assert "CELERY_WS_PUBLIC_URL" in error.msg


@pytest.mark.usefixtures("token_server")
class TokenAcceptedTests(TestCase):
    server: ServerThread

    def test_the_server_accepts_the_views_token_at_the_views_url(self) -> None:
        bob = User.objects.create_user("bob")
        self.client.force_login(bob)
        with override_settings(CELERY_WS_PUBLIC_URL=self.server.url):
            grant = self.client.get("/ws/token/").json()
        assert grant["url"] == self.server.url + "/"
        assert asyncio.run(authenticated_as(grant["url"], grant["token"])) == str(bob.pk)


class TemplateTagTests(TestCase):
    def render(self) -> str:
        return Template("{% load celery_ws %}{% celery_ws_script %}").render(Context())

    def test_renders_the_config_then_the_script_from_static_files(self) -> None:
        html = self.render()
        match = re.fullmatch(
            r'<script id="celery-ws-config" type="application/json">(.*)</script>\n'
            r'<script src="/static/celery_ws/celery-ws.js"></script>',
            html,
        )
        assert match, html
        assert json.loads(match[1]) == {"url": "wss://ws.example.com/live/", "tokenUrl": "/ws/token/"}

    @override_settings(CELERY_WS_PUBLIC_URL="https://ws.example.com/</script><script>alert(1)</script>")
    def test_the_config_cannot_close_its_script_element(self) -> None:
        html = self.render()
        assert html.count("</script>") == 2
        assert "\\u003C/script\\u003E" in html

    @override_settings(ROOT_URLCONF="tests.contrib.no_urls", STATIC_URL="https://cdn.example.com/s/")
    def test_without_the_token_view_routed_token_url_is_null(self) -> None:
        html = self.render()
        assert '"tokenUrl": null' in html
        assert '<script src="https://cdn.example.com/s/celery_ws/celery-ws.js">' in html


def test_the_static_finder_serves_celery_ws_own_file() -> None:
    """The app-directories finder finds the file celery-ws serve hands out:
    one file in the package, no copy."""
    found = finders.find("celery_ws/celery-ws.js")
    assert found is not None
    assert Path(found).resolve() == PACKAGE / "static" / "celery_ws" / "celery-ws.js"
    finder = finders.get_finder("django.contrib.staticfiles.finders.AppDirectoriesFinder")
    collected = sorted(path for path, _ in finder.list([]))
    assert collected == sorted(f"celery_ws/{p.name}" for p in (PACKAGE / "static" / "celery_ws").iterdir())


def test_the_environment_wins_over_django_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_WS_PUBLIC_URL", "https://from-env.example.com")
    ws_settings.cache_clear()
    settings = ws_settings()
    assert (settings.public_url, PUBLIC_URL) == (
        "https://from-env.example.com",
        "https://ws.example.com/live/",
    )
    assert settings.secret is not None
    assert settings.secret.get_secret_value() == SECRET  # the rest still from settings.py


@override_settings(CELERY_WS_SECRETT="x" * 40, CELERY_WS_TOKEN_TTL=30)
def test_a_misspelled_django_setting_is_named_as_written_in_settings_py(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whoever misspelled it wrote ``CELERY_WS_SECRETT`` in settings.py: a
    warning about ``ws_secrett in app.conf`` sends them looking elsewhere."""
    with caplog.at_level(logging.WARNING, logger="celery_ws.settings"):
        settings = ws_settings()
    told = [r.getMessage() for r in caplog.records if r.name == "celery_ws.settings"]
    assert told == [
        "unknown celery-ws setting CELERY_WS_SECRETT in Django settings is ignored: "
        "did you mean CELERY_WS_SECRET?"
    ]
    assert settings.token_ttl == 30  # the rest is read as before
    assert settings.secret is not None and settings.secret.get_secret_value() == SECRET


def test_celery_ws_imports_without_django() -> None:
    """Every module outside contrib.django imports with Django unavailable."""
    script = """
import importlib, pkgutil, sys
sys.modules["django"] = None  # any import of django now fails
import celery_ws
names = [m.name for m in pkgutil.walk_packages(celery_ws.__path__, "celery_ws.")
         if not m.name.startswith("celery_ws.contrib.django") and m.name != "celery_ws.__main__"]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=seconds(60), check=False
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 30
