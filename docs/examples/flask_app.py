"""A Flask application whose page follows its user's tasks live, beside the
tutorial's tasks.py:

    export CELERY_WS_SECRET=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    celery-ws serve --app tasks:app       # token mode: it shares the secret with this app
    celery -A tasks worker
    FLASK_SECRET_KEY=dev flask --app flask_app run
"""

import os
from urllib.parse import urljoin

from flask import Flask, abort, redirect, render_template_string, request, session
from tasks import app as celery_app
from tasks import import_rows

from celery_ws.tokens import connection_grant, settings_of, websocket_url

app = Flask(__name__)
app.secret_key = os.environ["FLASK_SECRET_KEY"]

# where browsers reach celery-ws serve (CELERY_WS_PUBLIC_URL), and its browser client
WS_URL = websocket_url(settings_of(celery_app))
SCRIPT_URL = urljoin(WS_URL.replace("ws", "http", 1), "/celery-ws.js")  # at the root of that host


# -- a stand-in for real authentication: /login?user=alice makes you alice -----------
@app.get("/login")
def login():
    session["user"] = request.args["user"]
    return redirect("/")


def current_user() -> str | None:
    return session.get("user")


# -- end of the stand-in ---------------------------------------------------------------


@app.get("/ws-token")
def ws_token():
    """What the page connects with: {"token", "url", "expires_at"}."""
    user = current_user()
    if user is None:
        return {"error": "not_authenticated"}, 401  # JSON, never a redirect to a login page
    return connection_grant(user, app=celery_app)


@app.post("/tasks")
def start_import():
    user = current_user()
    if user is None:
        abort(401)
    result = import_rows.delay_for(user, request.get_json()["path"], rows=20)  # events go to user
    return {"task_id": result.id}


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Imports</title>
<script src="{{ script_url }}"></script>
<button id="start">Import orders.csv</button> <span id="state"></span>
<p><progress id="bar" max="100" value="0"></progress> <span id="outcome"></span></p>
<script>
  const $ = (id) => document.getElementById(id);
  const client = new CeleryWS.Client({{ ws_url|tojson }}, {
    // asked again before each connection, so an expired token is replaced
    token: () => fetch("/ws-token").then((r) => r.json()).then((grant) => grant.token),
    onStateChange: (state) => ($("state").textContent = state),
    onProgress: (e) => ($("bar").value = e.progress ?? 0),
    onConfirmationRequest: (e) => client.confirm(e.callback_id, confirm(e.message), ""),
    onDone: (e) => ($("outcome").textContent = e.type === "task_succeeded" ? "done" : e.type),
  });
  client.connect();
  $("start").onclick = () =>
    fetch("/tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ path: "orders.csv" }),
    });
</script>
"""


@app.get("/")
def page():
    if current_user() is None:
        return redirect("/login?user=alice")
    return render_template_string(PAGE, script_url=SCRIPT_URL, ws_url=WS_URL)
