"""The Django app: its static files are celery_ws' own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.core import checks

from celery_ws.exceptions import SettingsError

__all__ = ["CeleryWSConfig", "check_settings"]


class CeleryWSConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "celery_ws.contrib.django"
    label = "celery_ws"
    verbose_name = "celery-ws"
    #: the celery_ws package, not this subpackage: Django's app-directories
    #: finder then serves static/celery_ws/celery-ws.js, the very file
    #: celery-ws serve hands out, with no second copy to drift
    path = str(Path(__file__).resolve().parents[2])

    def ready(self) -> None:
        checks.register(check_settings)


def check_settings(**_: Any) -> list[checks.CheckMessage]:
    """``manage.py check`` (and runserver, migrate) report a bad ``CELERY_WS_*``
    value at start, naming it, rather than at the first token request."""
    from .conf import ws_settings

    try:
        settings = ws_settings()
    except SettingsError as exc:
        return [checks.Error(str(exc), id="celery_ws.E001")]
    if not settings.token_mode:
        return [
            checks.Warning(
                "CELERY_WS_SECRET is not set: the token view cannot mint tokens (open mode)",
                hint='python -c "import secrets; print(secrets.token_urlsafe(32))", in settings or the environment',
                id="celery_ws.W001",
            )
        ]
    return []
