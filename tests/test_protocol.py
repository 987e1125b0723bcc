"""Client frames are parsed strictly; events are encoded once and carry their id."""

from __future__ import annotations

import pytest

from celery_ws.protocol import (
    Cancel,
    Confirm,
    Ping,
    ProtocolError,
    Subscribe,
    TaskStepResult,
    dumps,
    loads,
    parse_action,
    progress_event,
    step_result_event,
    with_id,
)


def test_each_action_parses_to_its_model():
    assert parse_action('{"action": "subscribe", "user_id": "u1"}') == Subscribe(
        action="subscribe", user_id="u1"
    )
    assert isinstance(parse_action('{"action": "confirm", "callback_id": "c", "proceed": false}'), Confirm)
    assert parse_action('{"action": "cancel", "task_id": "t", "user_id": "u"}') == Cancel(
        action="cancel", task_id="t", user_id="u"
    )
    ping = parse_action('{"action": "ping", "timestamp": 5}')
    assert isinstance(ping, Ping)
    assert ping.model_dump(exclude={"action"}) == {"timestamp": 5}


@pytest.mark.parametrize("proceed", ['"true"', "1", "0", "null", "[]"])
def test_proceed_must_be_a_real_boolean(proceed):
    with pytest.raises(ProtocolError) as info:
        parse_action(f'{{"action": "confirm", "callback_id": "c", "proceed": {proceed}}}')
    assert info.value.code == "invalid_message"
    assert info.value.details == {"field": "proceed"}


def test_unknown_action_is_echoed_but_truncated():
    with pytest.raises(ProtocolError) as info:
        parse_action('{"action": "%s"}' % ("x" * 1000))
    assert info.value.frame()["action"] == "x" * 64


def test_progress_event_computes_percent_and_tolerates_unknown_total():
    assert progress_event("t", "u", 1, 3, "m", 1.0)["progress"] == 33.33
    assert progress_event("t", "u", 7, None, None, 1.0)["progress"] is None


def test_step_result_event_keeps_the_seed_fields():
    result = TaskStepResult(step="s", message="m", status="failed", error_code="E003", error_message="GPU")
    frame = step_result_event(result, task_id="t", user_id="u", step=2, callback_id="c")
    assert frame["step"] == "s"
    assert frame["step_number"] == 2
    assert frame["callback_id"] == "c"
    assert frame["error_code"] == "E003"
    assert frame["completed"] is False


def test_with_id_inserts_the_id_without_reencoding():
    payload = dumps({"type": "x", "n": 1})
    assert loads(with_id(b"5-0", payload)) == {"id": "5-0", "type": "x", "n": 1}
