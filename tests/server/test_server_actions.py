"""Every client action over a real socket, and bad input: a clear error frame,
the connection stays open, the server keeps serving."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import seconds

BAD_FRAMES = [
    ("{not json", "invalid_json", None),
    (b"\xff\xfe\x00binary", "invalid_json", None),
    ("[1, 2]", "invalid_message", ""),
    ('"just a string"', "invalid_message", ""),
    ('{"action": "explode"}', "unknown_action", None),
    ('{"no_action": true}', "unknown_action", None),
    ('{"action": 5}', "unknown_action", None),
    ('{"action": "confirm"}', "invalid_message", "callback_id"),
    ('{"action": "confirm", "callback_id": "abc"}', "invalid_message", "proceed"),
    ('{"action": "confirm", "callback_id": "abc", "proceed": "yes"}', "invalid_message", "proceed"),
    ('{"action": "confirm", "callback_id": 7, "proceed": true}', "invalid_message", "callback_id"),
    ('{"action": "confirm", "callback_id": "../../etc", "proceed": true}', "invalid_message", "callback_id"),
    ('{"action": "cancel"}', "invalid_message", "task_id"),
    ('{"action": "cancel", "task_id": ["a"]}', "invalid_message", "task_id"),
    ('{"action": "subscribe"}', "invalid_message", "user_id"),
    ('{"action": "subscribe", "user_id": 12}', "invalid_message", "user_id"),
    ('{"action": "subscribe", "user_id": "' + "x" * 500 + '"}', "invalid_message", "user_id"),
    ('{"action": "subscribe", "task_id": "a b"}', "invalid_message", "task_id"),
]


@pytest.mark.parametrize(("raw", "code", "field"), BAD_FRAMES)
async def test_bad_frames_get_an_error_and_the_connection_survives(celery_ws_server, raw, code, field):
    async with connect(celery_ws_server.url, proxy=None) as ws:
        await ws.send(raw)
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == code, error
        assert error["message"]
        if field is not None:
            assert error["field"] == field
        await ws.send(json.dumps({"action": "ping", "n": 1}))
        pong = json.loads(await ws.recv())
        assert pong["type"] == "pong"
        assert pong["original_data"] == {"action": "ping", "n": 1}


async def test_unknown_action_message_names_the_action(celery_ws_client):
    async with celery_ws_client() as client:
        reply = await client.request({"action": "explode"}, "never")
    assert reply == {
        "type": "error",
        "code": "unknown_action",
        "message": "Unknown action: explode",
        "action": "explode",
    }


async def test_ping_echoes_the_client_data(celery_ws_client):
    async with celery_ws_client() as client:
        pong = await client.ping(timestamp=123, note="hi")
    assert pong["original_data"] == {"action": "ping", "timestamp": 123, "note": "hi"}
    assert isinstance(pong["timestamp"], float)


async def test_unknown_callback_is_an_error(celery_ws_client):
    async with celery_ws_client() as client:
        reply = await client.confirm("no-such-callback", True)
    assert reply["type"] == "error"
    assert reply["code"] == "unknown_callback"


async def test_cancel_of_an_unknown_task_is_an_error(celery_ws_client):
    async with celery_ws_client() as client:
        reply = await client.cancel("no-such-task")
    assert reply["type"] == "error"
    assert reply["code"] == "not_found"


async def test_unsubscribe_stops_delivery(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        publisher.send_to_user(user, {"type": "note", "n": 1})
        await client.wait_for_event("note", n=1)
        reply = await client.request({"action": "unsubscribe", "user_id": user}, "unsubscribed")
        assert reply["user_id"] == user
        publisher.send_to_user(user, {"type": "note", "n": 2})
        publisher.broadcast({"type": "marker", "for": user})
        await client.wait_for_event("marker", **{"for": user})
    assert [f["n"] for f in client.frames if f["type"] == "note"] == [1]


async def test_unsubscribed_connection_sees_every_event_in_open_mode(celery_ws_client, publisher, user):
    async with celery_ws_client() as watcher, celery_ws_client(user_id=user + "-other") as other:
        publisher.send_to_user(user, {"type": "note", "n": 1})
        seen = await watcher.wait_for_event("note", user_id=user)
        publisher.broadcast({"type": "marker", "for": user})
        await other.wait_for_event("marker", **{"for": user})
    assert seen["n"] == 1
    assert not [f for f in other.frames if f.get("type") == "note"]


async def test_connections_over_the_limit_are_refused_with_503(celery_ws_redis_url):
    from celery_ws import Settings
    from celery_ws.testing import ServerThread

    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, max_connections=2)).start()
    try:
        async with connect(server.url, proxy=None) as first, connect(server.url, proxy=None) as second:
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url, proxy=None)
            assert refused.value.response.status_code == 503
            await first.send(json.dumps({"action": "ping"}))
            assert json.loads(await first.recv())["type"] == "pong"
            assert second.state.name == "OPEN"
        assert server.call(lambda: server.manager.get_status()["connections_rejected_server_full"]) == 1
    finally:
        server.stop()


async def test_a_burst_of_subscribes_is_served_without_running_out_of_redis_connections(
    celery_ws_server, user
):
    """More simultaneous subscribes than the server has Redis connections: they
    wait for a free one instead of failing."""
    from celery_ws.client import Client
    from celery_ws.connections import ASYNC_POOL_SIZE

    clients = [Client(celery_ws_server.url, timeout=seconds(10)) for _ in range(3 * ASYNC_POOL_SIZE)]
    try:
        await asyncio.gather(*(client.__aenter__() for client in clients))
        replies = await asyncio.gather(
            *(client.subscribe(user_id=f"{user}-{n}") for n, client in enumerate(clients))
        )
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    assert [reply["type"] for reply in replies] == ["subscription_confirmed"] * len(clients)
