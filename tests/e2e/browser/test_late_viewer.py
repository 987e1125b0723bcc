"""A page opened after its task started: ``?task=`` / ``subscribe({taskId})``
and the task's ``state`` applied through the page's callbacks, with a question
shown only while it is open. Real Chromium, server and worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests import tasks
from tests.helpers import seconds

from .conftest import ServeProcess, screenshot
from .test_page import card, open_page, progress_value

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None


def open_task_page(page: Any, server: ServeProcess, task_id: str) -> Any:
    page.goto(f"{server.http_url}/?task={task_id}")
    expect(page.locator("#state")).to_have_text("open")
    return card(page, task_id)


def test_a_late_page_shows_where_the_task_is_and_never_an_answered_question(page, server, user):
    open_page(page, server, user)
    result = tasks.progress_then_ask.delay_for(user, steps=30, delay=0.2)  # 6 s of writing after the answer
    question = card(page, result.id).locator(".question")
    question.locator("button.proceed").click()
    expect(card(page, result.id).locator(".steps")).to_contain_text(f"Proceeded by {user}")

    # opened while the task writes its rows: its progress, no question
    late = page.context.new_page()
    row = open_task_page(late, server, result.id)
    expect(row).to_have_attribute("data-status", "running")
    late.wait_for_function(
        "id => document.querySelector(`[data-task-id='${id}'] .progress`).value > 50", arg=result.id
    )
    expect(row.locator(".message")).to_contain_text("Writing row")
    expect(row.locator(".question")).to_have_count(0)
    expect(row.locator(".steps")).to_contain_text("Write 30 rows?")  # the step, not a question
    expect(row).to_have_attribute("data-status", "succeeded", timeout=seconds(20) * 1000)
    assert result.get(timeout=seconds(10))["written"] == 30

    # opened after the end: the final result at once
    after = page.context.new_page()
    row = open_task_page(after, server, result.id)
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.locator(".outcome")).to_contain_text('"written":30')
    expect(row.locator(".question")).to_have_count(0)
    assert progress_value(after, result.id) == 100
    screenshot(after, "late-viewer-finished")


def test_a_late_page_gets_an_open_question_once_and_answers_it(page, server, user):
    result = tasks.progress_then_ask.delay_for(user, steps=3, delay=0.01)
    open_page(page, server, user)
    question = card(page, result.id).locator(".question")
    expect(question).to_have_count(1)  # re-sent to the user's late connection
    # an anonymous page following another task subscribes to this one once connected
    other = page.context.new_page()
    other.goto(f"{server.http_url}/?task=another-task")
    expect(other.locator("#state")).to_have_text("open")
    other.wait_for_selector("body[data-ready]", state="attached")
    other.evaluate("id => window.celeryWs.subscribe({taskId: id})", result.id)
    row = card(other, result.id)
    expect(row.locator(".question")).to_have_count(1)  # from the state and re-sent: shown once
    expect(row.locator(".question")).to_contain_text("Write 3 rows?")
    row.locator(".question button.proceed").click()
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(card(page, result.id).locator(".question")).to_have_count(0)
    assert result.get(timeout=seconds(10))["written"] == 3
