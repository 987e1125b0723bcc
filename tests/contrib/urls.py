"""The URLs of the Django project the contrib tests configure (conftest.py)."""

from django.urls import include, path

urlpatterns = [path("ws/", include("celery_ws.contrib.django.urls"))]
