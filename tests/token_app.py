"""A Celery app whose ``app.conf`` holds the celery-ws secret, as a Django
project's would (``CELERY_WS_SECRET`` in settings.py, ``namespace="CELERY"``):
``celery -A tests.token_app ws token`` must sign with it."""

from __future__ import annotations

from celery import Celery

SECRET = "the-apps-own-secret-0123456789abcdefghij"

app = Celery("token_app", set_as_current=False)
app.conf.update(ws_secret=SECRET, ws_token_ttl=90, ws_public_url="https://ws.example.com")
