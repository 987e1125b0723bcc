from __future__ import annotations

from django.contrib.auth import views as auth
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.imports, name="imports"),
    path("imports/", views.start_import, name="start_import"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("ws/", include("celery_ws.contrib.django.urls")),  # ws/token/
]
