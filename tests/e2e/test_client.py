"""The Python client (celery_ws.client.Client) against a real server, worker and
Redis: every event type, token mode, auto-ack, de-duplication, and reconnecting
to a restarted server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from celery_ws import Settings, issue_token
from celery_ws.client import Client
from celery_ws.protocol import SUBPROTOCOL, event, event_order
from celery_ws.testing import ServerThread
from celery_ws.testing.redis_server import free_port
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess

SECRET = "client-tests-secret-0123456789abcdefghij"


def types_for(client: Client, task_id: str) -> list[str]:
    return [f["type"] for f in client.frames if f.get("task_id") == task_id and "id" in f]


def ids_increase(client: Client) -> bool:
    keys = [event_order(f["id"]) for f in client.frames if isinstance(f.get("id"), str)]
    return keys == sorted(keys) and len(keys) == len(set(keys))


def test_event_ids_compare_as_numbers_not_strings():
    assert event_order("999-5") < event_order("1000-0") < event_order("1000-1")
    assert event_order("1795651777522-10") > event_order("1795651777522-9")


# -- every event type ---------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_lifecycle_progress_and_step_result(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        assert client.connection.subprotocol == SUBPROTOCOL
        result = tasks.report.delay_for(user, 3, step="load")
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
        sent = await client.wait_for_event("task_sent", task_id=result.id)
        started = await client.wait_for_event("task_started", task_id=result.id)
        progress = await client.wait_for_event("task_progress", task_id=result.id, current=3)
        step = await client.wait_for_event("task_step_result", task_id=result.id)
    assert sent["name"] == started["name"] == "tests.tasks.report"
    assert progress["total"] == 3
    assert progress["progress"] == 100.0
    assert progress["message"] == "working"
    assert step["step"] == "load"
    assert step["result"] == {"n": 3}
    assert step["callback_id"] is None
    assert done["result"] == {"n": 3, "ratio": "1.5"}
    kinds = types_for(client, result.id)
    assert kinds[0] == "task_sent"
    assert kinds[-1] == "task_succeeded"
    assert ids_increase(client)
    assert client.last_event_id == max((f["id"] for f in client.frames if "id" in f), key=event_order)


@pytest.mark.usefixtures("worker")
async def test_confirmation_request_and_answer(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await client.wait_for(
            lambda f: f.get("task_id") == result.id and bool(f.get("callback_id"))
        )
        assert request["type"] == "task_step_result"
        assert request["message"] == "Continue?"
        reply = await client.confirm(request["callback_id"], True, "go")
        answered = await client.wait_for_event("confirmation_answered", task_id=result.id)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert reply["type"] == "confirmation_received"
    assert answered["callback_id"] == request["callback_id"]
    assert answered["proceed"] is True
    assert answered["answered_by"] == user
    assert done["result"]["feedback"] == "go"


@pytest.mark.usefixtures("worker")
async def test_confirmation_expired_and_task_failed(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user, timeout=0.3)
        expired = await client.wait_for_event("confirmation_expired", task_id=result.id)
        failed = await client.wait_for_event("task_failed", task_id=result.id)
    assert expired["callback_id"]
    assert failed["error_code"] == "ConfirmationTimeout"


@pytest.mark.usefixtures("worker")
async def test_task_failed(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.fail.delay_for(user)
        failed = await client.wait_for_event("task_failed", task_id=result.id)
    assert failed["error_code"] == "ValueError"
    assert "broken" in failed["error_message"]


@pytest.mark.usefixtures("worker")
async def test_task_retrying_then_succeeded(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.retry_once.delay_for(user)
        retrying = await client.wait_for_event("task_retrying", task_id=result.id)
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
    assert retrying["retries"] == 1
    assert "first try fails" in str(retrying["reason"])
    assert done["result"] == "second try"


@pytest.mark.usefixtures("worker")
async def test_task_cancelled(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.spin.delay_for(user)
        await client.wait_for_event("task_progress", task_id=result.id)
        reply = await client.cancel(result.id)
        cancelled = await client.wait_for_event("task_cancelled", task_id=result.id)
    assert reply == {"type": "cancel_received", "task_id": result.id}
    assert cancelled["requested_by"] == user


async def test_heartbeat_broadcast_and_send_to_user(celery_ws_client, user, publisher):
    task_id = f"task-{uuid.uuid4().hex[:8]}"
    async with celery_ws_client(user_id=user) as client:
        publisher.emit(event("heartbeat", task_id=task_id, user_id=user, interval=30))
        publisher.broadcast({"type": "system_notification", "message": f"hello {user}"})
        publisher.send_to_user(user, {"type": "personal_notification", "message": "yours"})
        beat = await client.wait_for_event("heartbeat", task_id=task_id)
        note = await client.wait_for_event("system_notification", message=f"hello {user}")
        mine = await client.wait_for_event("personal_notification")
    assert beat["interval"] == 30
    assert beat["user_id"] == user
    assert "id" not in note  # broadcasts are live only: never replayed, so no resume point
    assert mine["message"] == "yours"
    assert mine["user_id"] == user


# -- client behaviour ---------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_a_confirmation_re_sent_on_subscribe_appears_once(celery_ws_client, user):
    async with celery_ws_client(user_id=user) as client:
        result = tasks.ask.delay_for(user)
        request = await client.wait_for(
            lambda f: f.get("task_id") == result.id and bool(f.get("callback_id"))
        )
        await client.subscribe(task_id=result.id)  # the server sends the open question again
        await client.ping()
        copies = [f for f in client.frames if f.get("id") == request["id"]]
        assert len(copies) == 1
        await client.confirm(request["callback_id"], True)
        await client.wait_for_event("task_succeeded", task_id=result.id)
    assert client.subscriptions == [(user, None), (None, result.id)]


async def test_send_with_ack_returns_once_a_client_acknowledged(celery_ws_client, user, publisher):
    async with celery_ws_client(user_id=user) as client:
        acked = await asyncio.to_thread(publisher.send_with_ack, user, {"type": "needs_ack", "n": 1}, 5.0)
        frame = await client.wait_for_event("needs_ack")
        reply = await client.wait_for_event("ack_received")
    assert acked is True
    assert frame["requires_ack"] is True
    assert client.acked == [frame["message_id"]]
    assert reply["message_id"] == frame["message_id"]
    assert not [f for f in client.frames if f.get("type") == "error"]


async def test_send_with_ack_times_out_without_a_listener(publisher, user):
    assert await asyncio.to_thread(publisher.send_with_ack, user + "-absent", {"type": "x"}, 0.3) is False


async def test_acking_another_users_message_is_refused(celery_ws_client, user, publisher):
    publisher.redis.set(publisher.settings.keys.ack("m-other"), user + "-someone-else", ex=30)
    async with celery_ws_client(user_id=user) as client:
        reply = await client.request({"action": "ack", "message_id": "m-other"}, "ack_received")
        unknown = await client.request({"action": "ack", "message_id": "m-none"}, "ack_received")
    assert reply["code"] == unknown["code"] == "forbidden"  # alike, so message ids cannot be probed
    assert publisher.redis.llen(publisher.settings.keys.ack_list("m-other")) == 0


async def test_without_reconnect_a_closed_server_ends_the_client(celery_ws_settings, user):
    server = ServerThread(celery_ws_settings).start()
    try:
        client = await Client(server.url, timeout=seconds(10)).__aenter__()
        await client.subscribe(user_id=user)
    finally:
        server.stop()
    await asyncio.wait_for(client.closed.wait(), seconds(5))
    assert client.reconnects == 0
    assert client.auth_error is None
    with pytest.raises(ConnectionClosed):
        await client.ping()
    await client.close()


# -- token mode ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_settings(celery_ws_redis_url) -> Settings:
    return Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)


@pytest.fixture(scope="module")
def token_server(token_settings) -> Iterator[ServerThread]:
    server = ServerThread(token_settings).start()
    yield server
    server.stop()


async def test_token_connects_as_its_user(token_server, token_settings, user, publisher):
    token = issue_token(user, ttl=60, settings=token_settings)
    async with Client(token_server.url, token=token, timeout=seconds(10)) as client:
        welcome = await client.wait_for_event("authenticated")
        publisher.send_to_user(user, {"type": "personal_notification", "message": "token"})
        note = await client.wait_for_event("personal_notification")
        refused = await client.subscribe(user_id=user + "-other")
    assert welcome["user_id"] == user
    assert client.user_id == user
    assert note["message"] == "token"
    assert refused["type"] == "error"
    assert refused["code"] == "forbidden"


async def test_a_refused_token_is_not_retried(token_server, user):
    wrong = issue_token(user, ttl=60, settings=Settings.load(secret="x" * 40))
    async with Client(
        token_server.url, token=wrong, reconnect=True, backoff_initial=0.05, timeout=seconds(10)
    ) as client:
        await asyncio.wait_for(client.closed.wait(), seconds(5))
        await asyncio.sleep(0.2)
    assert client.auth_error is not None
    assert client.reconnects == 0
    assert client.connection.close_code == 4401


async def test_a_token_function_renews_an_expiring_token(token_server, token_settings, user, publisher):
    minted: list[str] = []

    def fresh_token() -> str:
        minted.append(issue_token(user, ttl=2, settings=token_settings))
        return minted[-1]

    async with Client(
        token_server.url, token=fresh_token, reconnect=True, backoff_initial=0.05, timeout=seconds(10)
    ) as client:
        await client.wait_for_event("authenticated")
        # closed at expiry, back at once
        await asyncio.wait_for(_until(lambda: client.reconnects >= 1), seconds(10))
        publisher.send_to_user(user, {"type": "after_renewal"})
        await client.wait_for_event("after_renewal")
    assert client.auth_error is None
    assert len(minted) >= 2
    assert len(set(minted)) == len(minted)


async def test_a_token_function_whose_token_is_refused_at_once_stops(token_server, user):
    calls = []

    def wrong_token() -> str:
        calls.append(1)
        return issue_token(user, ttl=60, settings=Settings.load(secret="y" * 40))

    async with Client(
        token_server.url, token=wrong_token, reconnect=True, backoff_initial=0.05, timeout=seconds(10)
    ) as client:
        await asyncio.wait_for(client.closed.wait(), seconds(5))
    assert client.auth_error is not None
    assert calls == [1]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.05)


# -- reconnect ----------------------------------------------------------------------------


async def test_reconnects_to_a_restarted_server_and_re_subscribes(
    celery_ws_redis_url, user, publisher, tmp_path
):
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    first = await asyncio.to_thread(ServeProcess(celery_ws_redis_url, tmp_path, port).start)
    second: ServeProcess | None = None
    try:
        async with Client(
            url, reconnect=True, backoff_initial=0.1, backoff_max=0.5, timeout=seconds(10)
        ) as client:
            await client.subscribe(user_id=user)
            publisher.send_to_user(user, {"type": "note", "n": 1})
            one = await client.wait_for_event("note", n=1)

            await asyncio.to_thread(first.stop)  # closes with 1001 going away
            async with asyncio.timeout(seconds(5)):
                while client.connected.is_set():
                    await asyncio.sleep(0.02)
            assert not client.closed.is_set()
            publisher.send_to_user(user, {"type": "note", "n": 2})  # sent while nobody listens

            second = await asyncio.to_thread(ServeProcess(celery_ws_redis_url, tmp_path, port).start)
            await asyncio.wait_for(client.connected.wait(), seconds(10))
            async with asyncio.timeout(seconds(10)):
                while not client.resubscriptions:
                    await asyncio.sleep(0.02)
            resubscribed = client.resubscriptions[0]
            assert client.reconnects == 1
            assert resubscribed["type"] == "subscription_confirmed"
            assert resubscribed["user_id"] == user

            # subscribed again (not a firehose connection): another user's event is not delivered
            publisher.send_to_user(user + "-other", {"type": "note", "n": 99})
            publisher.send_to_user(user, {"type": "note", "n": 3})
            three = await client.wait_for_event("note", n=3)
            assert not [f for f in client.frames if f.get("n") == 99]
            assert event_order(three["id"]) > event_order(one["id"])

            # the event sent while the client was away was replayed, once, in order
            assert resubscribed["recovered"] is True
            order = [f["n"] for f in client.frames if f.get("type") == "note"]
            assert order == [1, 2, 3]

            await asyncio.to_thread(second.stop)
            async with asyncio.timeout(seconds(5)):
                while client.connected.is_set():
                    await asyncio.sleep(0.02)
            began = time.monotonic()
        assert time.monotonic() - began < 2.0  # close() does not wait out the backoff
        assert client.closed.is_set()
    finally:
        first.stop()
        if second is not None:
            second.stop()
