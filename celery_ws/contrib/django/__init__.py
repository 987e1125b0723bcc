"""celery-ws in a Django project.

    INSTALLED_APPS = [..., "django.contrib.staticfiles", "celery_ws.contrib.django"]
    urlpatterns = [..., path("ws/", include("celery_ws.contrib.django.urls"))]

    CELERY_WS_SECRET = "..."                          # shared with celery-ws serve and the workers
    CELERY_WS_PUBLIC_URL = "wss://ws.example.com/"   # where browsers reach celery-ws serve

``GET ws/token/`` answers the signed-in user with ``{"token", "url",
"expires_at"}`` (JSON 401 for anyone else, never a redirect to a login page,
which a page's ``fetch().json()`` could not read). ``{% load celery_ws %}
{% celery_ws_script %}`` puts ``celery-ws.js`` (from this app's static files)
and its configuration in a page. Settings are Django's ``CELERY_WS_*`` names,
the same as the environment variables, read through
:class:`celery_ws.settings.Settings` (the environment wins, as for every
celery-ws process): :func:`~celery_ws.contrib.django.conf.ws_settings`.
Start tasks for ``user_id(request.user)`` so their events reach that user.
"""

from .conf import user_id, ws_settings

__all__ = ["user_id", "ws_settings"]
