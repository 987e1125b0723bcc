"""Settings: the seed's variable names, app.conf keys, and precedence."""

from __future__ import annotations

import pytest

from celery_ws import Settings, SettingsError


def test_defaults_match_the_seed():
    settings = Settings.load()
    assert (settings.host, settings.port, settings.callback_timeout) == ("127.0.0.1", 8765, 300)


def test_seed_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("WEBSOCKET_HOST", "0.0.0.0")
    monkeypatch.setenv("WEBSOCKET_PORT", "9001")
    monkeypatch.setenv("WEBSOCKET_MAX_CONNECTIONS", "50")
    monkeypatch.setenv("WEBSOCKET_PING_INTERVAL", "30")
    monkeypatch.setenv("WEBSOCKET_PING_TIMEOUT", "10")
    monkeypatch.setenv("WEBSOCKET_CALLBACK_TIMEOUT", "60")
    monkeypatch.setenv("CELERY_WS_REDIS_URL", "redis://example:6380/2")
    s = Settings.load()
    assert (s.host, s.port, s.max_connections, s.ping_interval, s.ping_timeout, s.callback_timeout) == (
        "0.0.0.0",
        9001,
        50,
        30,
        10,
        60,
    )
    assert s.redis_url == "redis://example:6380/2"


def test_precedence_code_then_environment_then_app_conf(monkeypatch):
    conf = {"ws_port": 7000, "ws_host": "10.0.0.1", "ws_callback_timeout": 5}
    monkeypatch.setenv("WEBSOCKET_PORT", "8000")
    s = Settings.load(conf, callback_timeout=9)
    assert (s.port, s.host, s.callback_timeout) == (8000, "10.0.0.1", 9)


def test_redis_url_defaults_to_a_redis_broker():
    assert Settings.load({"broker_url": "redis://broker:6379/3"}).redis_url == "redis://broker:6379/3"
    assert Settings.load({"broker_url": "amqp://guest@rabbit//"}).redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WEBSOCKET_PORT", "eighty", "WEBSOCKET_PORT"),
        ("WEBSOCKET_PORT", "70000", "WEBSOCKET_PORT"),
        ("WEBSOCKET_CALLBACK_TIMEOUT", "-1", "WEBSOCKET_CALLBACK_TIMEOUT"),
        ("CELERY_WS_REDIS_URL", "http://x", "CELERY_WS_REDIS_URL"),
    ],
)
def test_bad_value_fails_with_the_variable_named(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=named):
        Settings.load()


def test_bad_app_conf_value_names_the_conf_key():
    with pytest.raises(SettingsError, match="ws_max_connections"):
        Settings.load({"ws_max_connections": 0})
