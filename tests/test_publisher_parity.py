"""Publisher and AsyncPublisher are one publisher in two colours: the same
methods and parameters, the same confirmation keywords wherever a question is
asked, and the same behaviour, because both run the sequences of
``celery_ws.publisher.core``."""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
from pydantic import BaseModel

from celery_ws import (
    AsyncPublisher,
    ProgressTask,
    Publisher,
    Settings,
    TaskStepResult,
    UserConfirmation,
    WebSocketManager,
    confirm_step,
)
from celery_ws.protocol import event, loads, message_event
from celery_ws.publisher import ConfirmOptions
from celery_ws.testing.redis_server import RedisServer
from tests.helpers import seconds

STEP = TaskStepResult(step="import", message="How many rows?", status="waiting")

#: asyncio spells ``close`` as ``aclose`` (as redis-py and httpx do)
ASYNC_NAMES = {"aclose": "close"}


class RowLimit(BaseModel):
    rows: int


# -- the same surface --------------------------------------------------------------------


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        ASYNC_NAMES.get(name, name): member
        for name, member in vars(cls).items()
        if inspect.isfunction(member) and (name == "__init__" or not name.startswith("_"))
    }


def _without_async(signature: inspect.Signature) -> str:
    """A signature as its synchronous twin would read: ``Awaitable[X]`` is ``X``."""
    return re.sub(r"Awaitable\[([^\[\]]*)\]", r"\1", str(signature))


def test_both_publishers_offer_the_same_methods_with_the_same_parameters():
    sync, asynchronous = _public_methods(Publisher), _public_methods(AsyncPublisher)
    assert sorted(sync) == sorted(asynchronous)
    for name, method in sync.items():
        twin = asynchronous[name]
        assert _without_async(inspect.signature(twin)) == str(inspect.signature(method)), name
        assert inspect.iscoroutinefunction(twin) is (name != "__init__"), name
        assert not inspect.iscoroutinefunction(method), name


ASKERS: list[Callable[..., Any]] = [
    confirm_step,
    ProgressTask.confirm,
    Publisher.notify_user,
    AsyncPublisher.notify_user,
    WebSocketManager.notify_user,
]


@pytest.mark.parametrize("ask", ASKERS, ids=lambda ask: ask.__qualname__)
def test_every_way_to_ask_takes_the_confirmation_keywords_from_one_definition(ask):
    assert ConfirmOptions.__optional_keys__ == {"timeout", "default", "assignees", "answer_model"}
    parameters = inspect.signature(ask).parameters
    (options,) = [p.name for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert typing.get_type_hints(ask)[options] == typing.Unpack[ConfirmOptions]
    assert not ConfirmOptions.__optional_keys__ & set(parameters)  # none redefined beside it


async def test_an_unknown_keyword_is_refused_before_anything_is_asked(celery_ws_settings, publisher, user):
    asynchronous = AsyncPublisher(settings=celery_ws_settings)
    try:
        with pytest.raises(TypeError, match="asignees"):
            publisher.notify_user(STEP, user, None, asignees=["someone"])
        with pytest.raises(TypeError, match="asignees"):
            await asynchronous.notify_user(STEP, user, None, asignees=["someone"])
    finally:
        await asynchronous.aclose()
    assert publisher.redis.zcard(celery_ws_settings.keys.home(user).user_pending(user)) == 0


# -- the same behaviour ------------------------------------------------------------------

Ask = Callable[..., Awaitable[UserConfirmation]]


@pytest.fixture(params=["AsyncPublisher", "WebSocketManager"])
async def async_notify_user(request, celery_ws_settings: Settings) -> AsyncIterator[Ask]:
    """``notify_user`` of an AsyncPublisher, or of a WebSocketManager serving in
    this loop (the seed's API); answers reach either through Redis."""
    if request.param == "AsyncPublisher":
        publisher = AsyncPublisher(settings=celery_ws_settings)
        yield publisher.notify_user
        await publisher.aclose()
        return
    manager = WebSocketManager(host="127.0.0.1", port=0, settings=celery_ws_settings)
    await manager.start_server()
    yield manager.notify_user
    await manager.stop_server()


async def test_a_typed_answer_from_an_assignee(async_notify_user: Ask, celery_ws_client, user):
    owner, reviewer = user, user + "-reviewer"
    async with celery_ws_client(user_id=owner) as o, celery_ws_client(user_id=reviewer) as r:
        asking = asyncio.create_task(
            async_notify_user(
                STEP, owner, None, 1, timeout=seconds(10), assignees=[reviewer], answer_model=RowLimit
            )
        )
        request = await r.wait_for(lambda f: f.get("type") == "task_step_result" and f.get("callback_id"))
        assert request["answer_schema"]["required"] == ["rows"]
        callback_id = request["callback_id"]

        def answer(rows: Any) -> dict[str, Any]:
            return {"action": "confirm", "callback_id": callback_id, "proceed": True, "data": {"rows": rows}}

        denied = await o.request(answer(1), "confirmation_received")
        assert denied["code"] == "forbidden"  # the owner is not an assignee here
        invalid = await r.request(answer("many"), "confirmation_received")
        assert invalid["code"] == "invalid_answer"
        assert (await r.request(answer(12), "confirmation_received"))["type"] == "confirmation_received"
        got = await asyncio.wait_for(asking, seconds(10))
    assert got.answered_by == reviewer
    assert got.data == RowLimit(rows=12)


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@pytest.mark.parametrize("kind", [Publisher, AsyncPublisher])
async def test_emit_many_stores_every_event_in_order_in_one_round_trip(kind, user):
    with RedisServer() as server:  # its own Redis: nothing else reads from it
        settings = Settings.load(redis_url=server.url)
        publisher = kind(settings=settings)
        probe = redis.Redis.from_url(server.url)
        try:
            # connected, and the script loaded (this Redis never saw it), before counting
            await _result(publisher.emit(message_event({"type": "warm-up"}, user_id=user + "-x")))
            before = probe.info("stats")["total_reads_processed"]
            results = await _result(
                publisher.emit_many(message_event({"type": "row", "n": n}, user_id=user) for n in range(20))
            )
            reads = probe.info("stats")["total_reads_processed"] - before
            stored = probe.xrange(settings.keys.home(user).user_events(user))
        finally:
            await _result(publisher.aclose() if kind is AsyncPublisher else publisher.close())
            probe.close()
    assert reads <= 3, reads  # this INFO, and the pipeline (one read, two if Redis split it)
    assert [result.id for result in results] == [entry_id.decode() for entry_id, _ in stored]
    assert [loads(fields[b"d"])["n"] for _, fields in stored] == list(range(20))


async def test_is_cancelled_and_cancelled_by_after_a_real_cancel(
    celery_ws_client, celery_ws_settings, publisher, user
):
    task_id = f"{user}-task"
    asynchronous = AsyncPublisher(settings=celery_ws_settings)
    try:
        await asynchronous.emit(event("task_sent", task_id=task_id, user_id=user))
        assert await asynchronous.is_cancelled(task_id) is False
        assert await asynchronous.cancelled_by(task_id) is None
        async with celery_ws_client(user_id=user) as client:
            assert (await client.cancel(task_id))["type"] == "cancel_received"
        assert await asynchronous.is_cancelled(task_id) is True
        assert await asynchronous.cancelled_by(task_id) == user
    finally:
        await asynchronous.aclose()
    assert publisher.is_cancelled(task_id) is True
    assert publisher.cancelled_by(task_id) == user
