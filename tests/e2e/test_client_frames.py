"""The Python client's memory and answers, against a real server and Redis: a
bounded ``frames`` that still finds what it waits for, typed answers through
``Client.confirm(data=...)``, the seed-compatible ``pong``, and the deprecated
module paths."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys

import pytest
from websockets.asyncio.client import connect

from celery_ws.protocol import message_event
from tests import tasks
from tests.helpers import seconds

KEEP = 50
BURST = 10 * KEEP


def _notes(user: str, numbers: range) -> list[dict]:
    return [message_event({"type": "note", "n": n}, user_id=user) for n in numbers]


async def test_frames_keep_at_most_the_bound_and_waiters_still_find_new_events(
    celery_ws_client, publisher, user
):
    async with celery_ws_client(user_id=user, keep_frames=KEEP) as client:
        # started before the burst: its position falls off the front while it waits
        last = asyncio.create_task(client.wait_for_event("note", n=BURST - 1))
        await asyncio.to_thread(publisher.emit_many, _notes(user, range(BURST)))
        assert (await last)["n"] == BURST - 1

        assert len(client.frames) == KEEP
        assert client.frames.maxlen == KEEP
        assert client.frames.received == BURST + 1  # and the subscription's reply
        assert [f["n"] for f in client.frames] == list(range(BURST - KEEP, BURST))
        assert [f["n"] for f in client.frames[-2:]] == [BURST - 2, BURST - 1]

        # a waiter that starts now finds a frame still kept, not one dropped
        assert (await client.wait_for_event("note", n=BURST - KEEP))["n"] == BURST - KEEP
        with pytest.raises(TimeoutError):
            await client.wait_for_event("note", n=0, timeout=0.3)

        # from an old position: the oldest kept frame first, then new ones
        async with contextlib.aclosing(client.events(start=0)) as events:
            assert (await anext(events))["n"] == BURST - KEEP
        await asyncio.to_thread(publisher.emit_many, _notes(user, range(BURST, BURST + 1)))
        assert (await client.wait_for_event("note", n=BURST))["n"] == BURST
        assert (await client.ping(after="burst"))["type"] == "pong"  # a reply is found past the bound
        assert len(client.frames) == KEEP
        assert client.frames.received == BURST + 3


def test_keep_frames_must_be_positive():
    from celery_ws.client import Client

    with pytest.raises(ValueError, match="keep_frames"):
        Client("ws://127.0.0.1:1", keep_frames=0)


@pytest.mark.usefixtures("worker")
async def test_a_typed_question_is_answered_through_confirm_data(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask_typed.delay_for(user)
        question = await client.wait_for(lambda f: f.get("callback_id") and f.get("task_id") == result.id)
        assert "answer_schema" in question

        refused = await client.confirm(question["callback_id"], True, data={"rows": "many"})
        assert (refused["type"], refused["code"], refused["fields"]) == ("error", "invalid_answer", ["rows"])
        taken = await client.confirm(
            question["callback_id"], True, "a dozen", data={"rows": 12, "note": "first"}
        )
        assert (taken["type"], taken["proceed"]) == ("confirmation_received", True)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert done["result"] == {"model": "RowLimit", "rows": 12, "note": "first"}


async def test_pong_echoes_the_whole_ping_frame_as_the_seed_does(celery_ws_server):
    ping = {"action": "ping", "n": 1, "nested": {"a": [1, 2]}}
    async with connect(celery_ws_server.url, proxy=None) as ws:
        await ws.send(json.dumps(ping))
        pong = json.loads(await asyncio.wait_for(ws.recv(), seconds(10)))
    assert pong["type"] == "pong"
    assert pong["original_data"] == ping


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("celery_ws.watch", "celery_ws.client.watch", "watch"),
        ("celery_ws.redis_server", "celery_ws.testing.redis_server", "RedisServer"),
    ],
)
def test_old_module_paths_still_work_with_a_deprecation_warning(old, new, name, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
