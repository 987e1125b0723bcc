"""The built-in page (/, celery-ws.js) and the seed's own JavaScript client, in
a real headless Chromium against a real ``celery-ws serve`` process and real
Celery tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.result import AsyncResult
from celery.states import REVOKED

from tests import tasks
from tests.helpers import seconds

from .conftest import REPO, ServeProcess, html_site, screenshot

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None


def open_page(page: Any, server: ServeProcess, user: str) -> None:
    page.goto(f"{server.http_url}/?user={user}")
    expect(page.locator("#state")).to_have_text("open")
    page.wait_for_selector("body[data-ready]", state="attached")  # subscription_confirmed arrived


def card(page: Any, task_id: str) -> Any:
    return page.locator(f'[data-task-id="{task_id}"]')


def progress_value(page: Any, task_id: str) -> float | None:
    return card(page, task_id).locator(".progress").evaluate("p => p.hasAttribute('value') ? p.value : null")


def wait_until(page: Any, check: Callable[[], bool], timeout: float = seconds(20)) -> None:
    """Poll ``check`` while letting Playwright dispatch page events (dialogs)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        page.wait_for_timeout(100)


def test_progress_then_question_then_success(page, server, user):
    open_page(page, server, user)
    result = tasks.progress_then_ask.delay_for(user, steps=20, delay=0.1)
    task = card(page, result.id)
    expect(task).to_have_attribute("data-status", "running")

    # the bar moves: a first value under 50 %, then a larger one
    page.wait_for_function(
        "id => { const p = document.querySelector(`[data-task-id='${id}'] .progress`);"
        " return p && p.hasAttribute('value') && p.value > 0 && p.value < 40; }",
        arg=result.id,
    )
    first = progress_value(page, result.id)
    page.wait_for_function(
        "([id, v]) => document.querySelector(`[data-task-id='${id}'] .progress`).value > v",
        arg=[result.id, first],
    )
    expect(task.locator(".percent")).to_have_text(re.compile(r"^\d+%$"))
    expect(task.locator(".message")).to_contain_text("Preparing row")
    screenshot(page, "progress")

    question = task.locator(".question")
    expect(question.locator("button.proceed")).to_be_visible()
    expect(question).to_contain_text("Write 20 rows?")
    expect(task.locator(".steps")).to_contain_text("Prepared 20 rows")
    assert progress_value(page, result.id) == 50
    question.locator("input.feedback").fill("ship it <b>now</b>")
    screenshot(page, "question")

    question.locator("button.proceed").click()
    expect(task).to_have_attribute("data-status", "succeeded")
    expect(task.locator(".status")).to_have_text("succeeded")
    expect(task.locator(".question")).to_have_count(0)
    expect(task.locator(".steps")).to_contain_text(f"Proceeded by {user}")
    expect(task.locator("button.cancel-task")).to_be_hidden()
    assert progress_value(page, result.id) == 100
    # event text is shown as text, never parsed as HTML
    expect(task.locator(".outcome")).to_contain_text("ship it <b>now</b>")
    screenshot(page, "success")
    assert result.get(timeout=seconds(10)) == {
        "written": 20,
        "feedback": "ship it <b>now</b>",
        "answered_by": user,
    }


def test_cancel_task_and_decline_question(page, server, user):
    open_page(page, server, user)

    # "Cancel task" on a running task
    spinning = tasks.spin.delay_for(user, delay=0.02)
    task = card(page, spinning.id)
    expect(task.locator(".message")).to_have_text("spinning")
    task.locator("button.cancel-task").click()
    expect(task).to_have_attribute("data-status", "cancelled")
    expect(task.locator(".status")).to_have_text("cancelled")
    expect(task.locator(".outcome")).to_contain_text(f"by {user}")
    expect(task.locator("button.cancel-task")).to_be_hidden()
    wait_until(page, lambda: spinning.state == REVOKED, timeout=seconds(15))
    screenshot(page, "cancelled")

    # "Cancel task" while the task waits on a question: the question goes away
    waiting = tasks.progress_then_ask.delay_for(user, steps=2, delay=0.01)
    task = card(page, waiting.id)
    expect(task.locator(".question button.proceed")).to_be_visible()
    task.locator("button.cancel-task").click()
    expect(task).to_have_attribute("data-status", "cancelled")
    expect(task.locator(".question")).to_have_count(0)
    wait_until(page, lambda: waiting.state == REVOKED, timeout=seconds(15))

    # "Cancel" on the question: the task gets proceed=False and the feedback
    declined = tasks.progress_then_ask.delay_for(user, steps=2, delay=0.01)
    task = card(page, declined.id)
    question = task.locator(".question")
    expect(question.locator("button.cancel")).to_be_visible()
    question.locator("input.feedback").fill("not today")
    question.locator("button.cancel").click()
    expect(task).to_have_attribute("data-status", "succeeded")
    expect(task.locator(".steps")).to_contain_text(f"Declined by {user}")
    assert declined.get(timeout=seconds(10)) == {"written": 0, "feedback": "not today"}


@pytest.mark.timeout(150)
def test_reconnect_shows_the_events_missed_while_the_server_was_down(page, server, user):
    open_page(page, server, user)
    result = tasks.slow_progress.delay_for(user, steps=50, delay=0.1)  # about 5 s
    task = card(page, result.id)
    page.wait_for_function(
        "id => { const p = document.querySelector(`[data-task-id='${id}'] .progress`);"
        " return p && p.hasAttribute('value') && p.value > 0; }",
        arg=result.id,
    )

    server.stop()
    expect(page.locator("#state")).to_have_text("reconnecting")
    seen_before = progress_value(page, result.id)
    assert seen_before is not None
    assert seen_before < 100
    screenshot(page, "reconnecting")

    # the task ends while no server is running: the page cannot know yet
    assert AsyncResult(result.id).get(timeout=seconds(30)) == "finished"
    expect(page.locator("#state")).to_have_text("reconnecting")
    expect(task).to_have_attribute("data-status", "running")

    server.start()  # same port
    expect(page.locator("#state")).to_have_text("open", timeout=seconds(30) * 1000)
    expect(task).to_have_attribute("data-status", "succeeded", timeout=seconds(15) * 1000)
    assert progress_value(page, result.id) == 100
    expect(task.locator(".message")).to_have_text("Step 50 of 50")  # the last progress event, replayed
    expect(page.locator("#notice")).to_be_empty()  # no history_lost
    screenshot(page, "recovered")


# The seed design's Appendix C client, unchanged except for its URL.
SEED_CLIENT = (
    "const ws = new WebSocket('ws://localhost:8765'); ws.onopen = function(event) { console.log('WebSocket "
    "connection established'); setInterval(() => { ws.send(JSON.stringify({ action: 'ping', timestamp: "
    "Date.now() })); }, 30000); }; ws.onmessage = function(event) { const data = JSON.parse(event.data); "
    "console.log('Message received:', data); if (data.type === 'task_step_result') { const proceed = "
    "confirm(data.message); ws.send(JSON.stringify({ action: 'confirm', callback_id: data.callback_id, "
    "proceed: proceed, feedback: proceed ? 'Agree to continue' : 'Cancel execution' })); } }; ws.onclose = "
    "function(event) { console.log('WebSocket connection closed'); };"
)


@pytest.fixture
def seed_page_url(server: ServeProcess) -> Iterator[str]:
    """A loopback HTTP server with one page holding exactly the seed's script."""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>seed client</title></head><body>"
        f"<script>{SEED_CLIENT.replace('ws://localhost:8765', server.url)}</script></body></html>"
    ).encode()
    with html_site(body) as port:
        yield f"http://127.0.0.1:{port}/"


def test_seed_javascript_client_answers_a_confirmation(page, seed_page_url, user):
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    with page.expect_console_message(lambda m: m.text == "WebSocket connection established"):
        page.goto(seed_page_url)
    result = tasks.ask.delay_for(user)
    wait_until(page, result.ready, timeout=seconds(30))
    answer = result.get(timeout=1)
    assert answer["proceed"] is True
    assert answer["feedback"] == "Agree to continue"
    assert answer["answered_by"] is None  # an unsubscribed open-mode connection answers anonymously
    assert "Continue?" in dialogs
    assert any(log.startswith("console.log: Message received:") for log in page.console_logs)


# -- token mode ----------------------------------------------------------------------

SECRET = "browser-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def token_server(celery_ws_redis_url: str, tmp_path: Any) -> Iterator[ServeProcess]:
    proc = ServeProcess(celery_ws_redis_url, tmp_path, env={"CELERY_WS_SECRET": SECRET}).start()
    yield proc
    proc.stop()


def test_token_mode_page_follows_its_user_and_resumes_after_a_restart(page, token_server, user):
    from celery_ws.settings import Settings
    from celery_ws.tokens import issue_token

    token = issue_token(user, ttl=600, settings=Settings.load(secret=SECRET))
    page.goto(f"{token_server.http_url}/?token={token}")
    expect(page.locator("#state")).to_have_text("open")
    page.wait_for_selector("body[data-ready]", state="attached")  # the "authenticated" frame arrived
    result = tasks.slow_progress.delay_for(user, steps=30, delay=0.1)
    task = card(page, result.id)
    expect(task.locator(".message")).to_contain_text("Step")

    token_server.stop()
    expect(page.locator("#state")).to_have_text("reconnecting")
    assert AsyncResult(result.id).get(timeout=seconds(30)) == "finished"
    token_server.start()
    expect(page.locator("#state")).to_have_text("open", timeout=seconds(30) * 1000)
    expect(task).to_have_attribute("data-status", "succeeded", timeout=seconds(15) * 1000)
    expect(page.locator("#notice")).to_be_empty()


def test_token_leaves_the_address_and_a_reload_says_it_is_gone(page, token_server, user):
    """A token in the address would stay in history and bookmarks: the page keeps
    it in memory, still follows its user, and after a reload (no token left) says
    so instead of trying to connect."""
    from celery_ws.settings import Settings
    from celery_ws.tokens import issue_token

    token = issue_token(user, ttl=600, settings=Settings.load(secret=SECRET))
    page.goto(f"{token_server.http_url}/?view=compact&token={token}#tasks")
    address = f"{token_server.http_url}/?view=compact#tasks"  # the other parameters and the fragment stay
    assert page.evaluate("location.href") == address
    expect(page.locator("#state")).to_have_text("open")
    page.wait_for_selector("body[data-ready]", state="attached")  # authenticated with the token in memory
    result = tasks.slow_progress.delay_for(user, steps=3, delay=0.05)
    expect(card(page, result.id)).to_have_attribute("data-status", "succeeded")
    expect(card(page, result.id).locator(".message")).to_have_text("Step 3 of 3")

    page.reload()
    expect(page.locator("#notice")).to_contain_text("No token")
    page.wait_for_timeout(1500)  # longer than a connection attempt would take: none is made
    assert page.evaluate(
        "[location.href, window.celeryWs, document.getElementById('state').textContent]"
    ) == [address, None, "closed"]
    screenshot(page, "token-removed-reload")


def test_token_mode_page_with_a_bad_token_stops_and_says_why(page, token_server):
    page.goto(f"{token_server.http_url}/?token=not-a-token")
    expect(page.locator("#state")).to_have_text("closed")
    expect(page.locator("#notice")).to_contain_text("Not signed in")
    page.wait_for_timeout(1500)  # longer than the first backoff steps: still no new attempt
    assert page.evaluate("window.celeryWs.state") == "closed"
    screenshot(page, "unauthorized")


# -- celery-ws.js against a scripted socket: the protocol details ----------------------

FAKE_WEBSOCKET = """
window.sockets = [];
class FakeSocket {
  constructor(url, protocols) {
    this.url = url; this.protocols = protocols; this.readyState = 0; this.sent = [];
    window.sockets.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code, reason) { this.readyState = 3; }
  open() { this.readyState = 1; this.onopen({}); }
  message(frame) { this.onmessage({data: JSON.stringify(frame)}); }
  drop(code, reason) { this.readyState = 3; this.onclose({code: code, reason: reason || ""}); }
}
window.WebSocket = FakeSocket;
window.sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
window.recorder = () => {
  const log = {events: [], progress: [], steps: [], questions: [], closed: [], done: [], errors: [], states: []};
  const add = name => e => log[name].push(e);
  return {log, options: {onEvent: add("events"), onProgress: add("progress"), onStepResult: add("steps"),
    onConfirmationRequest: add("questions"), onConfirmationClosed: add("closed"), onDone: add("done"),
    onError: add("errors"), onStateChange: add("states"), minDelay: 20, maxDelay: 80, pingInterval: 0}};
};
"""


@pytest.fixture
def scripted_page(page: Any) -> Any:
    page.set_content("<!doctype html><title>celery-ws.js</title>")
    page.add_script_tag(content=FAKE_WEBSOCKET)
    page.add_script_tag(content=(REPO / "celery_ws" / "static" / "celery_ws" / "celery-ws.js").read_text())
    return page


def test_client_open_mode_protocol(scripted_page):
    out = scripted_page.evaluate("""async () => {
      const {log, options} = recorder();
      const c = new CeleryWS.Client("ws://h/", {...options, userId: "u1", taskId: "t9"});
      c.connect();
      const s1 = sockets[0];
      s1.open();
      s1.message({type: "subscription_confirmed", user_id: "u1", task_id: null});
      s1.message({id: "1795651777522-9", type: "task_progress", task_id: "t1", progress: 10});
      s1.message({id: "1795651777522-10", type: "task_progress", task_id: "t1", progress: 20});
      s1.message({id: "1795651777522-9", type: "task_progress", task_id: "t1", progress: 10});  // duplicate
      s1.message({id: "1795651777521-99", type: "task_step_result", task_id: "t1", callback_id: "cb1"});
      s1.message({id: "1795651777523-0", type: "task_step_result", task_id: "t1", callback_id: null,
                  requires_ack: true, message_id: "m1"});
      s1.message({id: "1795651777523-1", type: "confirmation_answered", task_id: "t1", callback_id: "cb1"});
      s1.message({id: "1795651777523-2", type: "task_succeeded", task_id: "t1", result: 1});
      s1.message({type: "error", code: "already_answered", callback_id: "cb1"});
      c.confirm("cb1", true, "fine");
      c.cancel("t1");
      const lastBeforeDrop = c.lastEventId;
      s1.drop(1001, "going away");
      const stateAfterDrop = c.state;
      for (let i = 0; i < 50 && sockets.length < 2; i++) await sleep(20);
      c.cancel("t2");  // while reconnecting: queued until subscribed
      const s2 = sockets[1];
      s2.open();
      s2.message({type: "subscription_confirmed", user_id: "u1", task_id: null, recovered: false});
      s2.message({id: "1795651777523-2", type: "task_succeeded", task_id: "t1", result: 1});  // replayed twice
      s2.drop(4401, "Token expired");
      await sleep(300);
      return {log, sent1: s1.sent, sent2: s2.sent, protocols: s1.protocols, url: s1.url, count: sockets.length,
              state: c.state, lastBeforeDrop, stateAfterDrop,
              cmp: [CeleryWS.compareEventIds("1-10", "1-9"), CeleryWS.compareEventIds("2-0", "10-0"),
                    CeleryWS.compareEventIds("5-5", "5-5")]};
    }""")
    assert out["protocols"] == ["celery-ws.v1"]
    assert out["url"] == "ws://h/"
    assert out["sent1"] == [
        {"action": "subscribe", "user_id": "u1"},
        {"action": "subscribe", "task_id": "t9"},
        {"action": "ack", "message_id": "m1"},
        {"action": "confirm", "callback_id": "cb1", "proceed": True, "feedback": "fine"},
        {"action": "cancel", "task_id": "t1"},
    ]
    assert out["lastBeforeDrop"] == "1795651777523-2"
    assert out["stateAfterDrop"] == "reconnecting"
    assert out["sent2"] == [
        {"action": "subscribe", "user_id": "u1", "last_event_id": "1795651777523-2"},
        {"action": "subscribe", "task_id": "t9", "last_event_id": "1795651777523-2"},
        {"action": "cancel", "task_id": "t2"},
    ]
    log = out["log"]
    assert [e["progress"] for e in log["progress"]] == [10, 20]
    assert [e["callback_id"] for e in log["questions"]] == ["cb1"]
    assert [e["message_id"] for e in log["steps"]] == ["m1"]
    assert [e["type"] for e in log["closed"]] == ["confirmation_answered"]
    assert [e["type"] for e in log["done"]] == ["task_succeeded"]
    assert [e["code"] for e in log["errors"]] == ["already_answered", "history_lost", "unauthorized"]
    assert log["errors"][2]["message"] == "Token expired"
    assert len([e for e in log["events"] if e.get("id")]) == 6  # each event once
    assert log["states"] == ["connecting", "open", "reconnecting", "open", "closed"]
    assert out["count"] == 2
    assert out["state"] == "closed"
    assert out["cmp"] == [1, -1, 0]


def test_client_token_mode_protocol(scripted_page):
    out = scripted_page.evaluate("""async () => {
      const {log, options} = recorder();
      const c = new CeleryWS.Client("ws://h/", {...options, token: "a b&c", taskId: "t9"});
      c.connect();
      const s1 = sockets[0];
      s1.open();
      const sentBeforeAuth = s1.sent.length;
      s1.message({type: "authenticated", user_id: "u1", expires_at: 0});
      s1.message({id: "17-3", type: "task_progress", task_id: "t9", progress: 5});
      s1.drop(1006, "");
      for (let i = 0; i < 50 && sockets.length < 2; i++) await sleep(20);
      const s2 = sockets[1];
      s2.open();
      s2.message({type: "authenticated", user_id: "u1", expires_at: 0});
      c.close();
      await sleep(300);
      return {urls: sockets.map(s => s.url), sentBeforeAuth, sent1: s1.sent, sent2: s2.sent,
              count: sockets.length, states: log.states};
    }""")
    assert out["urls"] == ["ws://h/?token=a%20b%26c", "ws://h/?token=a%20b%26c&last_event_id=17-3"]
    assert out["sentBeforeAuth"] == 0
    assert out["sent1"] == [{"action": "subscribe", "task_id": "t9"}]
    assert out["sent2"] == [{"action": "subscribe", "task_id": "t9", "last_event_id": "17-3"}]
    assert out["count"] == 2
    assert out["states"][-1] == "closed"


def test_client_token_function_renews_an_expired_token(scripted_page):
    out = scripted_page.evaluate("""async () => {
      const {log, options} = recorder();
      let minted = 0;
      const token = () => Promise.resolve("t" + (++minted));
      const c = new CeleryWS.Client("ws://h/", {...options, token});
      c.connect();
      for (let i = 0; i < 50 && sockets.length < 1; i++) await sleep(10);
      const s1 = sockets[0];
      s1.open();
      s1.message({type: "authenticated", user_id: "u1", expires_at: 0});
      s1.drop(4401, "Token expired");           // accepted, then expired: renew
      for (let i = 0; i < 50 && sockets.length < 2; i++) await sleep(20);
      const s2 = sockets[1];
      s2.open();
      s2.drop(4401, "invalid token");          // refused at once: stop
      await sleep(300);
      return {urls: sockets.map(s => s.url), count: sockets.length, states: log.states,
              errors: log.errors.map(e => e.code)};
    }""")
    assert out["urls"] == ["ws://h/?token=t1", "ws://h/?token=t2"]
    assert out["count"] == 2
    assert out["states"][-1] == "closed"
    assert out["errors"] == ["unauthorized"]


def test_client_subscribe_state_and_typed_confirm(scripted_page):
    out = scripted_page.evaluate("""async () => {
      const {log, options} = recorder();
      const c = new CeleryWS.Client("ws://h/", {...options, userId: "u1"});
      c.connect();
      const s = sockets[0];
      s.open();
      s.message({type: "subscription_confirmed", user_id: "u1", task_id: null});
      s.message({id: "5-0", type: "task_progress", task_id: "seen", progress: 1});
      // once connected: a task's subscription starts afresh (its state), unless told where to resume
      const returned = c.subscribe({taskId: "done"});
      c.subscribe({taskId: "asking"});
      c.subscribe({taskId: "resumed", lastEventId: "4-0"});
      c.subscribe({taskId: "done"});  // already followed: nothing sent
      // a finished task: its progress, its last question as a plain step, its end
      s.message({type: "subscription_confirmed", task_id: "done", state: {
        progress: {id: "1-0", type: "task_progress", task_id: "done", progress: 40},
        step_result: {id: "2-0", type: "task_step_result", task_id: "done", callback_id: "old", step: "q"},
        final: {id: "3-0", type: "task_succeeded", task_id: "done", result: 7}}});
      // a task asking now: the question from the state, then re-sent as an open question: once
      const question = {id: "6-0", type: "task_step_result", task_id: "asking", callback_id: "cb6",
                        answer_schema: {type: "object"}};
      s.message({type: "subscription_confirmed", task_id: "asking",
                 state: {progress: null, step_result: question, final: null}});
      s.message(question);
      // a resume that recovered the history: the replay carries the events, the state is skipped
      s.message({type: "subscription_confirmed", task_id: "resumed", recovered: true, state: {
        progress: {id: "4-5", type: "task_progress", task_id: "resumed", progress: 90}, step_result: null,
        final: null}});
      c.confirm("cb6", true, "", {rows: 3, mode: "fast"});
      c.confirm("cb7", false);
      return {log, sent: s.sent, same: returned === c, last: c.lastEventId};
    }""")
    assert out["same"] is True
    assert out["sent"] == [
        {"action": "subscribe", "user_id": "u1"},
        {"action": "subscribe", "task_id": "done"},
        {"action": "subscribe", "task_id": "asking"},
        {"action": "subscribe", "task_id": "resumed", "last_event_id": "4-0"},
        {"action": "confirm", "callback_id": "cb6", "proceed": True, "data": {"rows": 3, "mode": "fast"}},
        {"action": "confirm", "callback_id": "cb7", "proceed": False},
    ]
    log = out["log"]
    assert [(e["task_id"], e["progress"]) for e in log["progress"]] == [("seen", 1), ("done", 40)]
    assert [(e["step"], e["callback_id"]) for e in log["steps"]] == [("q", None)]
    assert [e["callback_id"] for e in log["questions"]] == ["cb6"]
    assert [(e["task_id"], e["result"]) for e in log["done"]] == [("done", 7)]
    assert out["last"] == "6-0"


def test_client_reports_refusals_once_and_keeps_trying(scripted_page):
    out = scripted_page.evaluate("""async () => {
      const {log, options} = recorder();
      const c = new CeleryWS.Client("ws://h/", {...options, userId: "u1"});
      c.connect();
      const next = async n => { for (let i = 0; i < 100 && sockets.length < n; i++) await sleep(10);
                                return sockets[n - 1]; };
      let s = await next(1);
      s.open(); s.drop(1013, "Too many connections");
      s = await next(2);
      s.open(); s.drop(1013, "Too many connections");   // the same trouble again: not reported again
      s = await next(3);
      s.open(); s.drop(1008, "Rate limit exceeded");
      s = await next(4);
      s.open();
      s.message({type: "subscription_confirmed", user_id: "u1", task_id: null});   // accepted
      s.drop(1013, "Too many connections");   // after an accepted connection: reported afresh
      s = await next(5);
      s.onerror({message: "Unexpected server response: 403"});   // what Node's ws says
      s.drop(1006, "");
      await next(6);
      c.close();
      return {errors: log.errors, count: sockets.length, states: log.states,
              exp: CeleryWS.tokenExpiry("x." + btoa(JSON.stringify({exp: 1700000000})).replace(/=+$/, "") + ".y"),
              notJwt: CeleryWS.tokenExpiry("opaque")};
    }""")
    errors = out["errors"]
    assert [(e["code"], e.get("closeCode")) for e in errors] == [
        ("try_again_later", 1013),
        ("policy_violation", 1008),
        ("try_again_later", 1013),
        ("handshake_refused", None),
    ]
    assert errors[0]["message"] == "Too many connections"
    assert errors[3]["status"] == 403
    assert "(HTTP 403)" in errors[3]["message"]
    assert out["count"] == 6
    assert "closed" not in out["states"][:-1]
    assert out["exp"] == 1700000000 * 1000
    assert out["notJwt"] is None
