"""``{% load celery_ws %}{% celery_ws_script %}``: celery-ws.js and where it connects.

Renders the configuration first, as a JSON script element (``json_script``:
escaped for HTML, never executed, so a Content-Security-Policy without
inline scripts allows it), then celery-ws.js from the static files::

    <script id="celery-ws-config" type="application/json">
      {"url": "wss://ws.example.com/", "tokenUrl": "/ws/token/"}</script>
    <script src="/static/celery_ws/celery-ws.js"></script>

A page (or celery-ws.js) reads it with
``JSON.parse(document.getElementById("celery-ws-config").textContent)``:
``url`` is the server (``CELERY_WS_PUBLIC_URL``), ``tokenUrl`` the token view,
null when the project's URLs do not include it.
"""

from __future__ import annotations

from django import template
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from celery_ws.tokens import websocket_url

from ..conf import ws_settings

__all__ = ["celery_ws_script", "register"]

register = template.Library()

CONFIG_ELEMENT_ID = "celery-ws-config"


def celery_ws_script() -> SafeString:
    config = {"url": websocket_url(ws_settings()), "tokenUrl": _token_url()}
    return format_html(
        '{}\n<script src="{}"></script>',
        json_script(config, CONFIG_ELEMENT_ID),
        static("celery_ws/celery-ws.js"),
    )


register.simple_tag(celery_ws_script)


def _token_url() -> str | None:
    try:
        return str(reverse("celery_ws:token"))
    except NoReverseMatch:
        return None
