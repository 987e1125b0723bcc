"""The token view: what a page fetches before it connects to celery-ws."""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from celery_ws.exceptions import SettingsError
from celery_ws.tokens import connection_grant

from .conf import user_id, ws_settings

__all__ = ["token"]

logger = logging.getLogger(__name__)


@never_cache  # type: ignore[untyped-decorator]  # Django ships no type information
@require_GET  # type: ignore[untyped-decorator]
def token(request: HttpRequest) -> JsonResponse:
    """``{"token", "url", "expires_at"}`` for the signed-in user.

    Anyone else gets a JSON 401, not ``login_required``'s redirect: the caller
    is a script (``fetch(url).then((r) => r.json())``) that can read a status
    and a JSON body, never a login page. GET and not cached: a token is minted
    per request, and a cross-site page cannot read the answer.
    """
    user = getattr(request, "user", None)
    if user is None:
        raise ImproperlyConfigured(
            "celery_ws.contrib.django's token view needs request.user: "
            "add django.contrib.auth.middleware.AuthenticationMiddleware to MIDDLEWARE"
        )
    if not user.is_authenticated:
        return JsonResponse({"error": "not_authenticated", "message": "sign in first"}, status=401)
    try:
        grant = connection_grant(user_id(user), settings=ws_settings())
    except SettingsError:
        logger.exception("cannot mint a celery-ws token")
        return JsonResponse({"error": "not_configured", "message": "no tokens can be minted"}, status=503)
    return JsonResponse(grant)
