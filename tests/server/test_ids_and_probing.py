"""Hostile ids and hostile nesting (issue 11, items 8, 10 and 11).

An id that spells another key's name (``<task>:events``) must name nothing but
itself; a frame nested deeper than the server can store must be refused by
name, never logged as a crash; and a user must not learn whether someone
else's task, question or message exists, or how it ended. The attacker speaks
through a bare socket (``tests/rawws.py``); the legitimate users through the
``websockets``-based :class:`~celery_ws.client.Client`, with real tasks on a
real worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celery_ws import Publisher, Settings, issue_token
from celery_ws.client import Client
from celery_ws.protocol import MAX_DEPTH
from celery_ws.testing import ServerThread
from tests import tasks
from tests.helpers import seconds
from tests.rawws import PING, TEXT, RawSocket

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "ids-and-probing-secret-0123456789abcdef"

#: what the server sends in answer to a client frame (as opposed to events)
REPLIES = {
    "error",
    "pong",
    "subscription_confirmed",
    "confirmation_received",
    "cancel_received",
    "ack_received",
}


@pytest.fixture(scope="module")
def settings(celery_ws_redis_url: str) -> Settings:
    return Settings.load(redis_url=celery_ws_redis_url, secret=SECRET)


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ServerThread]:
    server = ServerThread(settings).start()
    yield server
    server.stop()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= logging.ERROR and r.exc_info
        ]


@pytest.fixture
def server_log() -> Iterator[_Records]:
    """What celery-ws logs during the test (the server runs in this process)."""
    handler = _Records()
    logger = logging.getLogger("celery_ws")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


class Raw:
    """A connection on a bare socket that sends one frame and reads its reply."""

    def __init__(self, socket: RawSocket) -> None:
        self.socket = socket

    @classmethod
    async def connect(cls, server: ServerThread, path: str = "/") -> Raw:
        return cls(await RawSocket.upgraded("127.0.0.1", server.manager.port, path))

    @classmethod
    async def logged_in(cls, server: ServerThread, settings: Settings, user: str) -> Raw:
        """Token mode: past ``authenticated`` and the subscription to its own user."""
        raw = await cls.connect(server, f"/?token={issue_token(user, ttl=300, settings=settings)}")
        for _ in range(5):
            if json.loads(await raw.next_text())["type"] == "subscription_confirmed":
                return raw
        raise AssertionError("no subscription_confirmed after logging in")

    async def next_text(self) -> bytes:
        for _ in range(100):
            opcode, payload = await self.socket.recv()
            if opcode == TEXT:
                return payload
            assert opcode == PING, opcode
        raise AssertionError("only pings from the server")

    async def reply(self, frame: dict[str, Any]) -> bytes:
        """The raw bytes of the server's answer to ``frame``."""
        self.socket.send(json.dumps(frame))
        for _ in range(100):
            payload = await self.next_text()
            if json.loads(payload)["type"] in REPLIES:
                return payload
        raise AssertionError(f"no reply to {frame}")

    def close(self) -> None:
        self.socket.abort()


async def logged_in(server: ServerThread, settings: Settings, user: str) -> Client:
    client = await Client(
        server.url, token=issue_token(user, ttl=300, settings=settings), timeout=seconds(10)
    ).__aenter__()
    await client.wait_for_event("authenticated")
    return client


async def question(client: Client, task_id: str) -> dict[str, Any]:
    return await client.wait_for(lambda f: f.get("task_id") == task_id and f.get("callback_id"))


def unknown() -> str:
    return f"unknown-{uuid.uuid4().hex}"


def alike(replies: dict[str, tuple[bytes, str]]) -> bytes:
    """The one reply all of ``replies`` (raw reply, the id it was about) give once
    their echoed id is blanked out; fails naming them when they differ."""
    blanked = {name: raw.replace(json.dumps(id_).encode(), b'"<id>"') for name, (raw, id_) in replies.items()}
    assert len(set(blanked.values())) == 1, blanked
    return next(iter(blanked.values()))


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- item 8: an id names only its own keys ------------------------------------------------


async def test_an_id_spelling_another_key_is_an_unknown_id_and_logs_no_traceback(
    server, settings, user, server_log
):
    client = await logged_in(server, settings, user)
    attacker = await Raw.logged_in(server, settings, user)  # the owner, probing their own keys
    try:
        result = tasks.ask.delay_for(user)
        await question(client, result.id)  # the task's stream and its pending set exist now
        for suffix in (":events", ":pending"):
            for frame in (
                {"action": "subscribe", "task_id": result.id + suffix},
                {"action": "cancel", "task_id": result.id + suffix},
            ):
                nothing = unknown()
                named = await attacker.reply(frame)
                assert json.loads(named)["code"] != "internal_error", named
                alike(
                    {
                        "suffixed": (named, frame["task_id"]),
                        "unknown": (await attacker.reply({**frame, "task_id": nothing}), nothing),
                    }
                )
        assert server_log.tracebacks() == []
        assert (await client.cancel(result.id))["type"] == "cancel_received"  # untouched, still the owner's
    finally:
        attacker.close()
        await client.close()


async def test_open_mode_follows_a_suffixed_task_id_as_a_task_of_its_own(celery_ws_server, user, server_log):
    async with Client(celery_ws_server.url, timeout=seconds(10)) as client:
        await client.subscribe(user_id=user)
        result = tasks.report.delay_for(user, 2)
        await client.wait_for_event("task_succeeded", task_id=result.id)
    watcher = await Raw.connect(celery_ws_server)
    try:
        confirmed = json.loads(await watcher.reply({"action": "subscribe", "task_id": result.id + ":events"}))
    finally:
        watcher.close()
    assert confirmed["type"] == "subscription_confirmed"
    assert confirmed["state"] == {"progress": None, "step_result": None, "final": None}
    assert server_log.tracebacks() == []


async def test_celery_task_ids_with_any_characters_name_only_their_own_keys(
    server, settings, user, publisher
):
    first = uuid.uuid4().hex
    ids = [first, first + ":events", first + ":pending", first + "}:events{", "{" + first + "}"]
    client = await logged_in(server, settings, user)
    try:
        for task_id in ids:  # one after the other: each later id spells a key of the first task
            tasks.report.apply_async_for(user, (2,), task_id=task_id)
            done = await client.wait_for_event("task_succeeded", task_id=task_id)
            assert done["result"]["n"] == 2
    finally:
        await client.close()
    home = publisher.settings.keys.home(user)
    for task_id in ids:
        history = publisher.redis.xrange(home.task_events(task_id))
        events = [json.loads(fields[b"d"]) for _, fields in history]
        assert {e["task_id"] for e in events} == {task_id}
        assert [e["type"] for e in events][-1] == "task_succeeded"
        assert publisher.redis.hget(home.task(task_id), "owner") == user.encode()


# -- item 10: one depth limit, checked when a frame is parsed -----------------------------


async def test_a_frame_nested_deeper_than_the_limit_is_refused_naming_the_field(
    server, settings, user, server_log
):
    client = await logged_in(server, settings, user)
    attacker = await Raw.logged_in(server, settings, user)
    try:
        result = tasks.ask.delay_for(user)
        callback_id = (await question(client, result.id))["callback_id"]
        for depth in (300, MAX_DEPTH + 1):
            refused = json.loads(
                await attacker.reply(
                    {"action": "confirm", "callback_id": callback_id, "proceed": True, "data": nested(depth)}
                )
            )
            assert refused == {
                "type": "error",
                "code": "invalid_message",
                "field": "data",
                "message": f"Invalid field 'data': nested deeper than {MAX_DEPTH} levels",
            }
            refused = json.loads(await attacker.reply({"action": "ping", "note": [nested(depth)]}))
            assert (refused["code"], refused["field"]) == ("invalid_message", "note")

        pong = json.loads(await attacker.reply({"action": "ping", "note": nested(MAX_DEPTH)}))
        assert pong["original_data"] == {"action": "ping", "note": nested(MAX_DEPTH)}
        taken = json.loads(
            await attacker.reply(
                {"action": "confirm", "callback_id": callback_id, "proceed": True, "data": nested(MAX_DEPTH)}
            )
        )
        assert taken["type"] == "confirmation_received"
        done = await client.wait_for_event("task_succeeded", task_id=result.id)
        assert done["result"]["data"] == nested(MAX_DEPTH)
        assert server_log.tracebacks() == []
    finally:
        attacker.close()
        await client.close()


# -- item 11: unknown and someone else's look alike ---------------------------------------


async def alices_tasks(alice: Client, owner: str) -> tuple[Any, list[tuple[str, str]]]:
    """A task of ``owner``'s waiting on a question, one that finished, and an
    unknown id: what another user probes. Returns the running task and the
    ``(name, id)`` pairs."""
    running = tasks.ask.delay_for(owner)
    await question(alice, running.id)
    finished = tasks.report.delay_for(owner, 1)
    await alice.wait_for_event("task_succeeded", task_id=finished.id)
    return running, [("running", running.id), ("finished", finished.id), ("unknown", unknown())]


async def test_subscribe_cannot_tell_an_unknown_task_from_another_users(server, settings, user):
    alice = await logged_in(server, settings, user + "-a")
    bob = await Raw.logged_in(server, settings, user + "-b")
    try:
        running, ids = await alices_tasks(alice, user + "-a")
        reply = alike(
            {name: (await bob.reply({"action": "subscribe", "task_id": id_}), id_) for name, id_ in ids}
        )
        assert json.loads(reply)["code"] == "forbidden"
        await alice.cancel(running.id)
    finally:
        bob.close()
        await alice.close()


async def test_cancel_cannot_tell_an_unknown_task_from_another_users(server, settings, user):
    alice = await logged_in(server, settings, user + "-a")
    bob = await Raw.logged_in(server, settings, user + "-b")
    try:
        running, ids = await alices_tasks(alice, user + "-a")
        reply = alike(
            {name: (await bob.reply({"action": "cancel", "task_id": id_}), id_) for name, id_ in ids}
        )
        assert json.loads(reply)["code"] == "forbidden"
        # refused, so still running, and its owner still may cancel it
        assert (await alice.cancel(running.id))["type"] == "cancel_received"
        await alice.wait_for_event("task_cancelled", task_id=running.id)
    finally:
        bob.close()
        await alice.close()


async def test_confirm_cannot_tell_an_unknown_question_from_another_users(server, settings, user):
    alice = await logged_in(server, settings, user + "-a")
    bob = await Raw.logged_in(server, settings, user + "-b")
    try:
        open_task = tasks.ask.delay_for(user + "-a")
        answered_task = tasks.ask.delay_for(user + "-a")
        expired_task = tasks.ask.delay_for(user + "-a", timeout=0.5, default=False)
        open_id = (await question(alice, open_task.id))["callback_id"]
        answered_id = (await question(alice, answered_task.id))["callback_id"]
        expired_id = (await question(alice, expired_task.id))["callback_id"]
        assert (await alice.confirm(answered_id, True))["type"] == "confirmation_received"
        await alice.wait_for_event("task_succeeded", task_id=answered_task.id)
        await alice.wait_for_event("confirmation_expired", task_id=expired_task.id)
        nothing = unknown()
        reply = alike(
            {
                name: (
                    await bob.reply({"action": "confirm", "callback_id": callback_id, "proceed": True}),
                    callback_id,
                )
                for name, callback_id in (
                    ("open", open_id),
                    ("answered", answered_id),
                    ("expired", expired_id),
                    ("unknown", nothing),
                )
            }
        )
        assert json.loads(reply)["code"] == "forbidden"
        # the refusals changed nothing: the open question is still alice's to answer
        assert (await alice.confirm(open_id, False, "mine"))["type"] == "confirmation_received"
        done = await alice.wait_for_event("task_succeeded", task_id=open_task.id)
        assert done["result"]["feedback"] == "mine"
    finally:
        bob.close()
        await alice.close()


async def test_ack_cannot_tell_an_unknown_message_from_another_users(
    server, settings, user, publisher: Publisher
):
    alice = await logged_in(server, settings, user + "-a")
    bob = await Raw.logged_in(server, settings, user + "-b")
    try:
        acked = asyncio.create_task(
            asyncio.to_thread(publisher.send_with_ack, user + "-a", {"type": "needs_ack"}, 5.0)
        )
        message_id = (await alice.wait_for_event("needs_ack"))["message_id"]
        assert await acked is True
        nothing = unknown()
        reply = alike(
            {
                name: (await bob.reply({"action": "ack", "message_id": id_}), id_)
                for name, id_ in (("alice's", message_id), ("unknown", nothing))
            }
        )
        assert json.loads(reply)["code"] == "forbidden"
    finally:
        bob.close()
        await alice.close()


async def test_open_mode_tells_only_an_anonymous_connection_that_an_id_is_unknown(celery_ws_server, user):
    """Open mode has no secrets to keep, so a connection that named no user hears
    precisely what is wrong; one that subscribed as a user is answered like a
    token-mode connection."""
    frames = {
        "cancel": {"action": "cancel", "task_id": unknown()},
        "confirm": {"action": "confirm", "callback_id": unknown(), "proceed": True},
        "ack": {"action": "ack", "message_id": unknown()},
    }
    anonymous = await Raw.connect(celery_ws_server)
    named = await Raw.connect(celery_ws_server)
    try:
        await named.reply({"action": "subscribe", "user_id": user})
        told = {action: json.loads(await anonymous.reply(frame))["code"] for action, frame in frames.items()}
        refused = {action: json.loads(await named.reply(frame))["code"] for action, frame in frames.items()}
    finally:
        anonymous.close()
        named.close()
    assert told == {"cancel": "not_found", "confirm": "unknown_callback", "ack": "unknown_message"}
    assert refused == {"cancel": "forbidden", "confirm": "forbidden", "ack": "forbidden"}
