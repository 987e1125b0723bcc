"""A web application that starts a Celery task for its signed-in user and lets
the page follow it live through celery-ws.

    CELERY_WS_SECRET=change-me-to-32-or-more-random-bytes celery -A examples.tasks ws serve     # the WebSocket server
    celery -A examples.tasks worker -P prefork -c 2                   # a worker
    CELERY_WS_SECRET=change-me-to-32-or-more-random-bytes uvicorn examples.fastapi_app.app:app   # this app

Why it is shaped this way: the browser never says who it is to celery-ws. The
application, which knows its user, mints a short-lived token
(:func:`celery_ws.issue_token`, signed with the ``CELERY_WS_SECRET`` the server
shares) and the page connects with it; the server then sends that user's events
only, and only that user may answer or cancel. Starting the task with
``delay_for(user, ...)`` is what makes the events that user's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urljoin

from fastapi import Cookie, Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from celery_ws import Settings
from celery_ws.tokens import connection_grant, websocket_url

#: the settings the celery-ws server has too: CELERY_WS_SECRET signs the tokens,
#: CELERY_WS_PUBLIC_URL is where browsers reach the server
SETTINGS = Settings.load()
#: the server's /celery-ws.js, at the root of the host browsers reach it on
SCRIPT_URL = urljoin(websocket_url(SETTINGS).replace("ws", "http", 1), "/celery-ws.js")
TOKEN_TTL = 300  # seconds: only needs to outlive the page's connect/reconnect attempts
USER_COOKIE = "demo_user"
PAGE = (Path(__file__).parent / "page.html").read_text()

app = FastAPI(title="celery-ws FastAPI example")


# -- STAND-IN FOR REAL AUTHENTICATION ------------------------------------------------
# Anyone can be anyone here: /login?user=alice sets a cookie that says "alice".
# Replace current_user() with your framework's session or OAuth user.


def current_user(
    demo_user: Annotated[str | None, Cookie(alias=USER_COOKIE)] = None,
    user: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:@+-]{1,128}$")] = None,
) -> str:
    name = user or demo_user
    if not name:
        raise HTTPException(401, "not signed in: open /login?user=alice")
    return name


@app.get("/login")
def login(user: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:@+-]{1,128}$")]) -> RedirectResponse:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(USER_COOKIE, user, httponly=True, samesite="lax")
    return response


# -- END OF STAND-IN --------------------------------------------------------------------


class ImportRequest(BaseModel):
    path: str = Field("orders.csv", max_length=200)
    rows: int = Field(50, ge=1, le=10_000)
    delay: float = Field(0.05, ge=0, le=1)


@app.post("/tasks")
def start_import(request: ImportRequest, user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    """Start the import for the signed-in user: its events go to that user's connections."""
    from examples.tasks import import_rows  # the Celery app connects to Redis on first use

    result = import_rows.delay_for(user, request.path, rows=request.rows, delay=request.delay)
    return {"task_id": result.id}


@app.get("/ws-token")
def ws_token(user: Annotated[str, Depends(current_user)]) -> dict[str, str | int]:
    """``{"token", "url", "expires_at"}``: a token the page connects with, and where."""
    return connection_grant(user, ttl=TOKEN_TTL, settings=SETTINGS)


@app.get("/", response_class=HTMLResponse)
def page(user: Annotated[str, Depends(current_user)]) -> str:
    return PAGE.replace("{{USER}}", json.dumps(user)).replace("{{SCRIPT_URL}}", SCRIPT_URL)
