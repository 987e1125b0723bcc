"""``ActionHandler`` without a socket, as ``celery_ws/server/handlers.py``
promises: a raw frame in, the reply frames out, and the Redis effects, with a
real ``Registry``, a real ``ServerStore`` and ``AsyncPublisher`` on the suite's
Redis.

A ``Session`` names its connection only as a key for the registry: the handler
never writes to it. A bare ``object()`` stands in for it; ``Session`` is typed
for the server's ``Peer`` (a ``websockets`` ``ServerConnection``), hence the ``cast``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from pydantic import BaseModel

from celery_ws import TaskStepResult
from celery_ws.protocol import dumps, event, loads
from celery_ws.publisher import AsyncPublisher
from celery_ws.server.handlers import ActionHandler
from celery_ws.server.metrics import Metrics
from celery_ws.server.registry import Registry, Session
from celery_ws.server.store import ServerStore
from celery_ws.server.wsconn import Peer
from celery_ws.settings import Settings
from celery_ws.tokens import Identity
from tests.helpers import seconds


class RowLimit(BaseModel):
    rows: int


@pytest.fixture
async def async_publisher(celery_ws_settings: Settings) -> AsyncIterator[AsyncPublisher]:
    publisher = AsyncPublisher(settings=celery_ws_settings)
    yield publisher
    await publisher.aclose()


class Server:
    """What ``WebSocketManager`` builds around an ``ActionHandler``, minus the sockets."""

    def __init__(self, settings: Settings, publisher: AsyncPublisher, *, token_mode: bool) -> None:
        self.registry = Registry()
        self.metrics = Metrics(lambda: len(self.registry))
        self.revoked: list[str] = []
        self.store = ServerStore(publisher.redis, settings)
        self.handler = ActionHandler(
            self.registry, self.store, publisher, self.revoke, self.metrics, token_mode=token_mode
        )

    async def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)

    def connect(self, identity: str | None = None) -> Session:
        """A session as the connection loop admits it: anonymous (open mode) or
        authenticated as ``identity`` (token mode)."""
        session = Session(cast(Peer, object()), firehose=identity is None, identity=identity)
        self.registry.add(session, authenticated=identity is not None)
        return session

    async def send(self, session: Session, frame: dict[str, Any] | str) -> list[dict[str, Any]]:
        raw = frame if isinstance(frame, str) else dumps(frame).decode()
        return [loads(reply) for reply in await self.handler.handle(session, raw)]


@pytest.fixture
def open_server(celery_ws_settings: Settings, async_publisher: AsyncPublisher) -> Server:
    return Server(celery_ws_settings, async_publisher, token_mode=False)


@pytest.fixture
def token_server(celery_ws_settings: Settings, async_publisher: AsyncPublisher) -> Server:
    return Server(celery_ws_settings, async_publisher, token_mode=True)


async def test_subscribe_and_unsubscribe_change_the_registry(open_server: Server, user: str) -> None:
    session = open_server.connect()
    conn = session.connection
    assert conn in open_server.registry.targets(user, None)  # open mode: unsubscribed sees everything

    (confirmed,) = await open_server.send(session, {"action": "subscribe", "user_id": user})
    assert confirmed == {"type": "subscription_confirmed", "user_id": user, "task_id": None}
    assert session.identity == user
    assert not session.firehose
    assert session.users == (user,)
    assert conn in open_server.registry.targets(user, None)
    assert conn not in open_server.registry.targets(user + "-other", None)

    (confirmed,) = await open_server.send(session, {"action": "subscribe", "task_id": "t-1"})
    assert confirmed["task_id"] == "t-1"
    assert confirmed["state"] == {"progress": None, "step_result": None, "final": None}  # nothing known yet
    assert conn in open_server.registry.targets(None, "t-1")

    (unsubscribed,) = await open_server.send(session, {"action": "unsubscribe", "user_id": user})
    assert unsubscribed == {"type": "unsubscribed", "user_id": user, "task_id": None}
    assert conn not in open_server.registry.targets(user, None)
    assert conn in open_server.registry.targets(None, "t-1")
    assert open_server.registry.counts() == {"users": 0, "tasks": 1, "firehose": 0}


async def test_ping_echoes_the_whole_frame(open_server: Server) -> None:
    before = time.time()
    (pong,) = await open_server.send(open_server.connect(), {"action": "ping", "n": 1, "nested": {"a": [1]}})
    assert pong["type"] == "pong"
    assert pong["timestamp"] >= before
    assert pong["original_data"] == {"action": "ping", "n": 1, "nested": {"a": [1]}}


async def test_invalid_json_is_an_error_frame_and_counted(open_server: Server) -> None:
    (error,) = await open_server.send(open_server.connect(), "{not json")
    assert error["type"] == "error"
    assert error["code"] == "invalid_json"
    assert open_server.metrics.snapshot()["messages_in_invalid"] == 1


@pytest.mark.parametrize(
    ("token_mode", "identity", "code"),
    [
        (False, None, "unknown_callback"),
        (True, "someone", "forbidden"),  # a named user cannot learn whether the id exists
    ],
    ids=["open", "token"],
)
async def test_confirm_of_an_unknown_id(
    celery_ws_settings: Settings,
    async_publisher: AsyncPublisher,
    token_mode: bool,
    identity: str | None,
    code: str,
) -> None:
    server = Server(celery_ws_settings, async_publisher, token_mode=token_mode)
    callback_id = uuid.uuid4().hex
    (error,) = await server.send(
        server.connect(identity), {"action": "confirm", "callback_id": callback_id, "proceed": True}
    )
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["callback_id"] == callback_id


async def test_cancel_of_another_users_task_is_forbidden_in_token_mode(
    token_server: Server, async_publisher: AsyncPublisher, user: str
) -> None:
    task_id = uuid.uuid4().hex
    await async_publisher.emit(event("task_started", task_id=task_id, user_id=user))

    (error,) = await token_server.send(
        token_server.connect(user + "-mallory"), {"action": "cancel", "task_id": task_id}
    )
    assert error["type"] == "error"
    assert error["code"] == "forbidden"
    assert error["task_id"] == task_id
    assert not await async_publisher.is_cancelled(task_id)
    assert token_server.revoked == []

    (received,) = await token_server.send(
        token_server.connect(user), {"action": "cancel", "task_id": task_id}
    )
    assert received == {"type": "cancel_received", "task_id": task_id}
    assert await async_publisher.cancelled_by(task_id) == user
    assert token_server.revoked == [task_id]


async def test_a_typed_answer_that_does_not_fit_is_refused_and_the_question_stays_open(
    token_server: Server, async_publisher: AsyncPublisher, user: str
) -> None:
    question = TaskStepResult(step="import", message="How many rows?", status="waiting")
    asking = asyncio.create_task(
        async_publisher.notify_user(question, user, None, 1, timeout=seconds(10), answer_model=RowLimit)
    )
    try:
        async with asyncio.timeout(seconds(10)):
            while not await token_server.store.pending_requests(user, None):
                await asyncio.sleep(0.05)
        session = token_server.connect(user)
        # what a connection is sent once authenticated: the welcome, its subscription, open questions
        identity = Identity(user, time.time() + 60)
        frames = [loads(f) for f in await token_server.handler.authenticated(session, identity, None)]
        frames += [loads(f) for f in token_server.registry.release(session)]
        assert [f["type"] for f in frames] == ["authenticated", "subscription_confirmed", "task_step_result"]
        callback_id = frames[2]["callback_id"]
        assert frames[2]["answer_schema"]["required"] == ["rows"]

        def answer(rows: object) -> dict[str, Any]:
            return {"action": "confirm", "callback_id": callback_id, "proceed": True, "data": {"rows": rows}}

        (refused,) = await token_server.send(session, answer("many"))
        assert refused["type"] == "error"
        assert refused["code"] == "invalid_answer"
        assert refused["fields"] == ["rows"]
        assert refused["callback_id"] == callback_id
        assert not asking.done()

        (received,) = await token_server.send(session, answer(12))
        assert received == {"type": "confirmation_received", "callback_id": callback_id, "proceed": True}
        got = await asyncio.wait_for(asking, seconds(10))
        assert got.data == RowLimit(rows=12)
        assert got.answered_by == user
    finally:
        asking.cancel()
