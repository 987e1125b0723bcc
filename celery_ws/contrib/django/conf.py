"""celery-ws settings from Django's settings.

A Django project keeps its configuration in settings.py, where the natural
names are the environment's: ``CELERY_WS_SECRET``, ``CELERY_WS_PUBLIC_URL``,
``CELERY_WS_TOKEN_TTL``. They are handed to :meth:`Settings.load` as the
``ws_<name>`` keys a Celery ``app.conf`` would carry (with Django's
``namespace="CELERY"`` the project's Celery app sees the very same keys), so
the web process, ``celery -A proj ws serve`` and the workers read one
configuration, validated and named the same way, and the environment wins
over settings.py for all of them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django import conf as django_conf
from django.core.signals import setting_changed
from django.utils.module_loading import import_string
from pydantic import TypeAdapter, ValidationError

from celery_ws.protocol import Identifier
from celery_ws.settings import CONF_PREFIX, Settings, warn_unknown

__all__ = ["user_id", "ws_settings"]

PREFIX = "CELERY_WS_"
_USER_ID: TypeAdapter[str] = TypeAdapter(Identifier)


@cache
def ws_settings() -> Settings:
    """celery-ws' settings from Django's ``CELERY_WS_*`` settings and the environment.

    Read once; Django's ``override_settings`` (tests) clears the cache.

    Raises:
        SettingsError: naming the setting whose value is invalid.
    """
    known = [PREFIX + field.upper() for field in Settings.model_fields]
    names = [name for name in dir(django_conf.settings) if name.startswith(PREFIX)]
    for name in names:  # named as settings.py spells them, not as the ws_* keys they become
        warn_unknown(name, PREFIX, "in Django settings", known)
    conf: dict[str, Any] = {
        CONF_PREFIX + name.removeprefix(PREFIX).lower(): getattr(django_conf.settings, name)
        for name in names
        if name in known
    }
    conf["broker_url"] = getattr(django_conf.settings, "CELERY_BROKER_URL", None)
    return Settings.load(conf)


def user_id(user: Any) -> str:
    """The celery-ws user id of a Django user: what tokens name and what
    ``task.delay_for()`` should be given, so that the task's events reach the
    person who started it.

    ``str(user.pk)`` unless ``CELERY_WS_USER_ID_FUNCTION`` names another
    callable (``"myproject.ws.user_id"``, taking the user).

    Raises:
        ValueError: the id is not one the server accepts (1-128 characters
            of ``[A-Za-z0-9_.:@+-]``).
    """
    function = ws_settings().user_id_function
    value = _function(function)(user) if function else str(user.pk)
    try:
        return _USER_ID.validate_python(value)
    except ValidationError:
        raise ValueError(
            f"{function or 'str(user.pk)'} gave {value!r}, not a celery-ws user id "
            "(1-128 characters of A-Z a-z 0-9 _ . : @ + -)"
        ) from None


@cache
def _function(path: str) -> Any:
    return import_string(path)


def _forget(*, setting: str, **_: Any) -> None:
    if setting.startswith(PREFIX) or setting == "CELERY_BROKER_URL":
        ws_settings.cache_clear()


setting_changed.connect(_forget, dispatch_uid="celery_ws.contrib.django.conf")
