"""Random JSON against a live server: every frame gets an answer (a reply or
an error frame) and the server keeps serving."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_ws.client import Client
from celery_ws.protocol import ACTIONS
from tests.helpers import seconds

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["user_id", "task_id", "callback_id", "proceed", "feedback", "last_event_id", "token", "timestamp"]
) | st.text(max_size=8)
messages = st.one_of(
    st.builds(
        lambda action, fields: {"action": action, **fields},
        st.sampled_from([*ACTIONS, "explode", ""]),
        st.dictionaries(field_names, json_values, max_size=5),
    ),
    json_values,
)

REPLY_TYPES = {
    "pong",
    "subscription_confirmed",
    "unsubscribed",
    "confirmation_received",
    "cancel_received",
    "error",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages, min_size=1, max_size=20))
def test_every_random_frame_gets_an_answer(celery_ws_server, batch):
    asyncio.run(_exchange(celery_ws_server.url, batch))


async def _exchange(url: str, batch: list) -> None:
    async with Client(url, timeout=seconds(5)) as client:
        for message in batch:
            start = len(client.frames)
            await client.connection.send(json.dumps(message))
            reply = await client.wait_for(lambda f: f.get("type") in REPLY_TYPES, start=start)
            if reply["type"] == "error":
                assert reply["code"] in {
                    "invalid_json",
                    "invalid_message",
                    "unknown_action",
                    "unknown_callback",
                    "not_found",
                    "forbidden",
                    "already_answered",
                    "confirmation_expired",
                    "task_finished",
                }, reply
                assert reply["message"]
        assert (await client.ping(after=len(batch)))["original_data"] == {
            "action": "ping",
            "after": len(batch),
        }
