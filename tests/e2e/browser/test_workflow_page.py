"""A workflow (issue 13: a task that asks without holding its worker, and the
continuation that runs with the answer) on the built-in page and in
celery-ws.js, in a real headless Chromium against a real ``celery-ws serve``.

The workflow's events are published through the suite's Redis by
``tests.workflow_events.Workflow`` as the contract describes them, with a real
question answered from the page."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import seconds
from tests.workflow_events import QUESTION, Workflow

from .conftest import ServeProcess, screenshot
from .test_page import card, open_page, progress_value, wait_until

pytestmark = pytest.mark.timeout(120)

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None

#: how long the page is watched for something that must NOT happen
QUIET_MS = 500

#: every status each row of the page takes, in order
RECORD_STATUSES = """() => {
  window.statuses = [];
  const record = row => window.statuses.push([row.dataset.taskId, row.dataset.status,
                                              row.querySelector('.status').textContent]);
  new MutationObserver(changes => changes.forEach(change => {
    if (change.type === 'attributes') record(change.target);
    else change.addedNodes.forEach(node => node.classList && node.classList.contains('task') && record(node));
  })).observe(document.getElementById('tasks'),
              {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
}"""


def test_one_row_follows_the_workflow_from_question_to_the_continuations_result(
    page: Any, server: ServeProcess, celery_ws_settings: Any, user: str
) -> None:
    open_page(page, server, user)
    page.evaluate(RECORD_STATUSES)
    workflow = Workflow(celery_ws_settings, user).start()
    row = card(page, workflow.id)

    expect(row).to_have_attribute("data-status", "waiting")
    expect(row.locator(".status")).to_have_text("waiting for your answer")
    question = row.locator(".question")
    expect(question).to_contain_text(QUESTION)
    expect(row.locator("button.cancel-task")).to_be_visible()  # a waiting workflow can be cancelled
    assert progress_value(page, workflow.id) == 50
    page.wait_for_timeout(QUIET_MS)
    screenshot(page, "workflow-waiting")

    question.locator("input.feedback").fill("go")
    question.locator("button.proceed").click()
    expect(row).to_have_attribute("data-status", "succeeded")
    workflow.join()

    # the continuation's progress, step and result, all in the first task's row
    expect(page.locator(".task")).to_have_count(1)
    expect(row).to_have_attribute("data-current-task", workflow.continuation)
    expect(row.locator(".name")).to_have_text("import_rows \u2192 write_rows")
    expect(row.locator(".steps")).to_contain_text("2 rows written")
    expect(row.locator(".steps")).to_contain_text(f"Proceeded by {user}")
    expect(row.locator(".steps li.continued")).to_have_count(1)  # task_continued came twice
    expect(row.locator(".question")).to_have_count(0)
    outcome = row.locator(".outcome").text_content() or ""
    assert json.loads(outcome.removeprefix("Result: ")) == {"written": 2, "proceed": True, "feedback": "go"}
    assert progress_value(page, workflow.id) == 100
    screenshot(page, "workflow-done")

    statuses = [(status, text) for task_id, status, text in page.evaluate("window.statuses")]
    assert {task_id for task_id, _, _ in page.evaluate("window.statuses")} == {workflow.id}
    assert statuses[-1] == ("succeeded", "succeeded")
    assert all(status in ("running", "waiting") for status, _ in statuses[:-1]), statuses  # no end before
    waiting = statuses.index(("waiting", "waiting for your answer"))
    assert ("running", "running") in statuses[waiting:], statuses  # running again: the continuation


def test_a_waiting_workflow_cancelled_from_its_row(
    page: Any, server: ServeProcess, celery_ws_settings: Any, user: str
) -> None:
    open_page(page, server, user)
    workflow = Workflow(celery_ws_settings, user).start()
    row = card(page, workflow.id)
    expect(row).to_have_attribute("data-status", "waiting")
    row.locator("button.cancel-task").click()
    expect(row).to_have_attribute("data-status", "cancelled")
    expect(row.locator(".outcome")).to_contain_text(f"by {user}")
    expect(row.locator(".question")).to_have_count(0)
    workflow.join()
    assert workflow.cancelled and workflow.answer is None


#: a celery-ws.js client of its own on the server's page, recording its callbacks
#: and answering the question with yes
RECORDING_CLIENT = """([user]) => new Promise(resolve => {
  const log = window.log = {done: [], waiting: [], continued: [], progress: [], events: []};
  const client = window.recording = new CeleryWS.Client(`ws://${location.host}/`, {
    userId: user,
    onEvent: e => { log.events.push(e.type); if (e.type === 'subscription_confirmed') resolve(); },
    onProgress: e => log.progress.push([e.task_id, e.workflow_id || null, CeleryWS.workflowOf(e)]),
    onConfirmationRequest: e => client.confirm(e.callback_id, true, 'go'),
    onWaiting: e => log.waiting.push([e.task_id, e.continuation_id, client.isWaiting(e.task_id)]),
    onContinued: e => log.continued.push([e.task_id, e.continuation_id, client.isWaiting(e.task_id)]),
    onDone: e => log.done.push([e.type, e.task_id, e.workflow_id || null]),
  });
  client.connect();
})"""


def test_celery_ws_js_reports_the_workflow_once_at_its_end(
    page: Any, server: ServeProcess, celery_ws_settings: Any, user: str
) -> None:
    page.goto(f"{server.http_url}/")  # no user: the page itself stays idle, celery-ws.js is loaded
    page.evaluate(RECORDING_CLIENT, [user])
    workflow = Workflow(celery_ws_settings, user).start()
    wait_until(page, lambda: page.evaluate("window.log.done.length") > 0)
    workflow.join()
    page.wait_for_timeout(QUIET_MS)
    log = page.evaluate("window.log")

    assert log["done"] == [["task_succeeded", workflow.continuation, workflow.id]]  # once, for the workflow
    assert log["waiting"] == [[workflow.id, workflow.continuation_id, True]]
    assert log["continued"] == [[workflow.id, workflow.continuation_id, False]]  # once, though sent twice
    assert log["events"].count("task_continued") == 1
    assert log["progress"] == [
        [workflow.id, None, workflow.id],
        [workflow.continuation, workflow.id, workflow.id],
        [workflow.continuation, workflow.id, workflow.id],
    ]

    # a task that never asks still ends with its own terminal event (as before workflows)
    plain = Workflow(celery_ws_settings, user)
    plain.emit("task_failed", plain.id, error_code="ValueError", error_message="bad row")
    wait_until(page, lambda: page.evaluate("window.log.done.length") == 2, timeout=seconds(10))
    assert page.evaluate("window.log.done[1]") == ["task_failed", plain.id, None]
    plain.join()
