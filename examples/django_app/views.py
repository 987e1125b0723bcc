"""The page and the view that starts an import for the signed-in user."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from celery_ws.contrib.django import user_id

from .tasks import import_orders


@login_required
def imports(request: HttpRequest) -> HttpResponse:
    """The page: a browser is sent to the login page, as pages are."""
    return render(request, "django_app/imports.html")


@require_POST
def start_import(request: HttpRequest) -> JsonResponse:
    """Called by the page's script: JSON, including the 401."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not_authenticated"}, status=401)
    # delay_for(): the task's events go to this user's connections, and only this user may answer or cancel
    result = import_orders.delay_for(user_id(request.user), "orders.csv")
    return JsonResponse({"task_id": result.id})
