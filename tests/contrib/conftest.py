"""A minimal Django project for celery_ws.contrib.django's tests, configured in
this process (Django's settings are process-wide: nothing else in the suite
uses Django in-process; the example's end-to-end test runs it in subprocesses),
with its test database set up once, as Django's test runner would."""

from __future__ import annotations

import os
from collections.abc import Iterator

import django
import pytest
from django.conf import settings

SECRET = "django-settings-secret-0123456789abcdefghij"
PUBLIC_URL = "https://ws.example.com/live/"

if not settings.configured:
    settings.configure(
        SECRET_KEY="celery-ws-contrib-tests",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.staticfiles",
            "celery_ws.contrib.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        ROOT_URLCONF="tests.contrib.urls",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        STATIC_URL="/static/",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        CELERY_WS_SECRET=SECRET,
        CELERY_WS_PUBLIC_URL=PUBLIC_URL,
        CELERY_WS_TOKEN_TTL=120,
    )
    django.setup()


@pytest.fixture(scope="session", autouse=True)
def django_test_database() -> Iterator[None]:
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(databases, verbosity=0)


@pytest.fixture(autouse=True)
def settings_from_django_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The developer's CELERY_WS_* environment would win over settings.py."""
    from celery_ws.contrib.django import ws_settings

    for name in [n for n in os.environ if n.startswith(("CELERY_WS_", "WEBSOCKET_"))]:
        if name != "CELERY_WS_TEST_TIMEOUT_FACTOR":
            monkeypatch.delenv(name)
    ws_settings.cache_clear()
    yield
    ws_settings.cache_clear()
