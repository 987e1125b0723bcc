"""The project's Celery app, configured from Django's settings (``CELERY_*``).

With ``namespace="CELERY"``, the ``CELERY_WS_*`` settings are this app's
``ws_*`` keys: ``celery -A examples.django_app ws serve`` and ``ws token``
read the secret the web process signs with, and the workers the same Redis
and key prefix.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_ws import CeleryWS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

app = Celery("django_app")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
CeleryWS(app)
