"""``path("ws/", include("celery_ws.contrib.django.urls"))``: the token view at
``ws/token/``, reversed as ``celery_ws:token``."""

from __future__ import annotations

from django.urls import path

from . import views

__all__ = ["app_name", "urlpatterns"]

app_name = "celery_ws"
urlpatterns = [path("token/", views.token, name="token")]
