"""Settings of the example project: development settings, on loopback only.

Every celery-ws setting here is also an environment variable of the same name,
which wins over this file (``python -m examples.django_app`` sets the Redis
URL, the public URL and the queue that way).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REDIS_URL = os.environ.get("CELERY_WS_REDIS_URL", "redis://127.0.0.1:6379/0")

DEBUG = True  # runserver then serves the static files, celery-ws.js among them
SECRET_KEY = "django-example-only-not-secret"  # an example bound to 127.0.0.1
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "celery_ws.contrib.django",  # the token view, {% celery_ws_script %}, celery_ws/celery-ws.js
    "examples.django_app",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "examples.django_app.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_APP_DB", str(Path(tempfile.gettempdir()) / "celery-ws-django-app.sqlite3")
        ),
    }
}
STATIC_URL = "/static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "imports"
LOGOUT_REDIRECT_URL = "login"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- Celery (read by celery.py with namespace="CELERY") --
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DJANGO_APP_QUEUE", "celery")
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# -- celery-ws: the web process, celery ws serve and the workers read these --
# token mode: in production, take it from the environment or a secrets store
CELERY_WS_SECRET = "django-example-secret-change-me-0123456789"
# where browsers reach `celery -A examples.django_app ws serve` (behind a proxy: the proxy's wss:// URL)
CELERY_WS_PUBLIC_URL = "ws://127.0.0.1:8765/"
CELERY_WS_TOKEN_TTL = 300  # seconds; the page asks the token view again for each connection
