"""A misspelled setting is named with the closest valid one, instead of being
ignored without a word; the server's start says how it is configured."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

from celery_ws import CeleryWS, Settings


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "celery_ws.settings"
    ]


def test_a_misspelled_app_conf_key_is_named_with_the_closest_setting(caplog):
    app = Celery("diagnostics", set_as_current=False)
    app.conf.ws_key_prefx = "mine"
    app.conf.ws_callback_timeout = 30  # a real one: no word about it
    with caplog.at_level(logging.WARNING):
        settings = CeleryWS(app).settings
    assert settings.key_prefix == "cws" and settings.callback_timeout == 30
    assert warnings_of(caplog) == [
        "unknown celery-ws setting ws_key_prefx in app.conf is ignored: did you mean ws_key_prefix?"
    ]


def test_a_misspelled_key_under_celerys_namespace_is_named_as_written(caplog, tmp_path, monkeypatch):
    """Django's way: ``config_from_object("django.conf:settings", namespace="CELERY")``
    keeps ``CELERY_WS_*`` keys in app.conf as settings.py spells them."""
    (tmp_path / "project_settings.py").write_text(
        "CELERY_WS_SECRET = 's' * 40\nCELERY_WS_PUBLIC_URLL = 'https://ws.example.com'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("namespaced", set_as_current=False)
    app.config_from_object("project_settings", namespace="CELERY")
    with caplog.at_level(logging.WARNING):
        settings = CeleryWS(app).settings
    assert settings.token_mode and settings.public_url is None
    assert warnings_of(caplog) == [
        "unknown celery-ws setting CELERY_WS_PUBLIC_URLL in app.conf is ignored: "
        "did you mean CELERY_WS_PUBLIC_URL?"
    ]


def test_a_misspelled_environment_variable_is_named_with_the_closest_setting(caplog, monkeypatch):
    monkeypatch.setenv("CELERY_WS_SECRETT", "x" * 40)
    monkeypatch.setenv("CELERY_WS_ALLOWED_ORIGIN", "http://a.example")
    monkeypatch.setenv("CELERY_WS_FROBNICATE", "1")
    monkeypatch.setenv("CELERY_WS_TOKEN", "a token for celery-ws watch")  # read by a command
    monkeypatch.setenv("CELERY_WS_TEST_SOMETHING", "1")  # test suites' own
    with caplog.at_level(logging.WARNING):
        assert not Settings.load().token_mode
    told = warnings_of(caplog)
    assert set(told) >= {
        "unknown celery-ws setting CELERY_WS_ALLOWED_ORIGIN in the environment is ignored: "
        "did you mean CELERY_WS_ALLOWED_ORIGINS?",
        "unknown celery-ws setting CELERY_WS_FROBNICATE in the environment is ignored: "
        "see the Configuration table in the README",
        "unknown celery-ws setting CELERY_WS_SECRETT in the environment is ignored: "
        "did you mean CELERY_WS_SECRET?",
    }
    assert not [line for line in told if "CELERY_WS_TOKEN " in line or "CELERY_WS_TEST_" in line]


def test_each_unknown_name_is_told_once_per_process(caplog):
    conf = {"ws_redis_ulr": "redis://127.0.0.1:1/0"}
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            Settings.load(conf)
    assert warnings_of(caplog) == [
        "unknown celery-ws setting ws_redis_ulr in app.conf is ignored: did you mean ws_redis_url?"
    ]


def test_the_server_start_names_mode_redis_prefix_page_and_origins(caplog):
    from celery_ws.testing import RedisServer, ServerThread

    password = "diagnostics-redis-password"
    with RedisServer(password=password) as redis_server:
        url = redis_server.url.replace("/0", "/3")
        settings = Settings.load(
            redis_url=url,
            secret="diagnostics-secret-0123456789abcdef",
            key_prefix="diag",
            serve_page=False,
            allowed_origins="https://app.example",
        )
        with caplog.at_level(logging.INFO, logger="celery_ws.server.manager"):
            server = ServerThread(settings).start()
            server.stop()
    started = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert len(started) == 1, caplog.text
    assert started[0].endswith(
        f"token mode, Redis 127.0.0.1:{redis_server.port} db 3 (password [redacted]), key prefix 'diag', "
        "page off, allowed origins: https://app.example (besides loopback)"
    ), started[0]
    assert password not in caplog.text
