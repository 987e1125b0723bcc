"""Typed questions in the built-in page: the form celery-ws.js builds from a
question's ``answer_schema`` (a pydantic model), answered in a real Chromium
against a real ``celery-ws serve`` and a real worker; and the same builder
used on its own, as an embedding page would."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import seconds

from .conftest import screenshot
from .form_tasks import ImportPlan, ask_plan
from .test_page import card, open_page

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips with the reason
    expect = None


def field(question: Any, path: str) -> Any:
    return question.locator(f'.cws-field[data-field="{path}"]')


def test_a_typed_question_is_answered_through_its_form(page, server, user):
    open_page(page, server, user)
    result = ask_plan.delay_for(user)
    question = card(page, result.id).locator(".question")
    expect(question.locator(".cws-form")).to_be_visible()

    # every field, with its label, default, bounds and description
    rows = question.get_by_label("Rows *")
    expect(rows).to_have_attribute("type", "number")
    expect(rows).to_have_attribute("min", "1")
    expect(rows).to_have_attribute("max", "500")
    expect(field(question, "rows")).to_contain_text("How many rows to write")
    expect(question.get_by_label("Ratio")).to_have_value("0.5")
    mode = question.get_by_label("Mode")
    expect(mode.locator("option:checked")).to_have_text("safe")
    expect(mode.locator("option")).to_have_text(["", "fast", "safe"])
    expect(question.get_by_label("Dry Run")).not_to_be_checked()
    expect(question.locator('fieldset[data-field="address"] legend')).to_have_text("Address *")
    expect(field(question, "address.city")).to_contain_text("Where the rows are written")
    expect(question.get_by_label("Zip Code")).to_have_value("")

    # required fields left empty: refused in the page, nothing sent
    question.locator("button.proceed").click()
    expect(field(question, "rows").locator(".cws-field-error")).to_have_text("Required")
    expect(field(question, "address.city").locator(".cws-field-error")).to_have_text("Required")
    expect(question.locator(".error")).to_have_text("Fill in the marked fields.")
    expect(question.locator("button.proceed")).to_be_enabled()

    # a value past the model's bound: the server refuses it and names the field
    rows.fill("1000")
    question.get_by_label("City *").fill("Lyon")
    question.locator("button.proceed").click()
    expect(question.locator(".error")).to_contain_text("does not fit the form")
    expect(field(question, "rows")).to_have_class("cws-field cws-invalid")
    expect(field(question, "rows").locator(".cws-field-error")).to_have_text(
        "A whole number, at least 1, at most 500"
    )
    expect(field(question, "address.city").locator(".cws-field-error")).to_have_text("")
    expect(question.locator("button.proceed")).to_be_enabled()
    screenshot(page, "typed-question-refused")
    assert not result.ready()  # still waiting for a good answer

    rows.fill("20")
    question.get_by_label("Ratio").fill("0.25")
    mode.select_option("fast")
    question.get_by_label("Dry Run").check()
    question.locator("button.proceed").click()
    expect(card(page, result.id)).to_have_attribute("data-status", "succeeded")
    assert result.get(timeout=seconds(10)) == {
        "rows": 20,
        "ratio": 0.25,
        "mode": "fast",
        "dry_run": True,
        "note": "",
        "address": {"city": "Lyon", "zip_code": None},
    }


def test_the_form_builder_on_its_own(page, server):
    """What an embedding page gets from celery-ws.js: the form and its typed data."""
    page.goto(f"{server.http_url}/")  # any page of the server's: it loads /celery-ws.js
    schema = ImportPlan.model_json_schema()
    out = page.evaluate(
        """schema => {
          const box = document.createElement("div");
          document.body.append(box);
          const form = CeleryWS.renderAnswerForm(schema, box);
          const empty = form.value();
          const set = (name, value) => { box.querySelector(`[name="${name}"]`).value = value; };
          set("rows", "7"); set("address.city", "Oslo"); set("address.zip_code", "0150"); set("note", "hi");
          box.querySelector('[name="mode"]').selectedIndex = 1;
          const filled = form.value();
          const unplaced = form.showErrors(["rows", "address", "data"]);
          const marked = [...box.querySelectorAll(".cws-invalid")].map(n => n.dataset.field);
          set("rows", "2.5");
          const fraction = form.value();
          return {empty, filled, unplaced, marked, fraction,
                  rowsError: box.querySelector('[data-field="rows"] .cws-field-error').textContent,
                  exported: typeof CeleryWS.renderAnswerForm};
        }""",
        schema,
    )
    assert out["exported"] == "function"
    assert out["empty"] is None
    assert out["filled"] == {
        "rows": 7,
        "ratio": 0.5,
        "mode": "fast",
        "dry_run": False,
        "note": "hi",
        "address": {"city": "Oslo", "zip_code": "0150"},
    }
    assert ImportPlan.model_validate(out["filled"]).address.zip_code == "0150"
    assert out["unplaced"] == ["address", "data"]
    assert out["marked"] == ["rows"]
    assert out["fraction"] is None
    assert out["rowsError"] == "Not a whole number"
