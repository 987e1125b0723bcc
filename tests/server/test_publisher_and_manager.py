"""Publishing from outside a task, and the seed's WebSocketManager API running
in an application's own event loop."""

from __future__ import annotations

import asyncio

import pytest

from celery_ws import (
    AsyncPublisher,
    ConfirmationTimeout,
    Settings,
    TaskStepResult,
    UserConfirmation,
    WebSocketManager,
)
from celery_ws.client import Client
from tests.helpers import seconds

STEP = TaskStepResult(
    step="data_validation",
    result={"validated_rows": 1000, "errors": 5},
    completed=True,
    message="Data validation completed, found 5 errors",
    status="completed",
)


async def test_send_to_user_reaches_only_that_user(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as mine, celery_ws_client(user_id=user + "-x") as other:
        event_id = publisher.send_to_user(user, {"type": "personal_notification", "message": "done"})
        got = await mine.wait_for_event("personal_notification")
        publisher.send_to_user(user + "-x", {"type": "marker"})
        await other.wait_for_event("marker")
    assert got["id"] == event_id
    assert got["user_id"] == user
    assert got["message"] == "done"
    assert not [f for f in other.frames if f.get("type") == "personal_notification"]


async def test_broadcast_reaches_every_connection(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as a, celery_ws_client(user_id=user + "-b") as b:
        publisher.broadcast({"type": "system_notification", "severity": "warning"})
        for client in (a, b):
            got = await client.wait_for_event("system_notification")
            assert got["severity"] == "warning"
            assert got["user_id"] is None


async def test_send_to_task_reaches_owner_and_task_watchers(celery_ws_client, publisher, user):
    from celery_ws.protocol import event

    publisher.emit(event("task_sent", task_id=f"{user}-task", user_id=user))
    async with celery_ws_client(user_id=user) as owner, celery_ws_client(task_id=f"{user}-task") as watcher:
        publisher.send_to_task(f"{user}-task", {"type": "note"})
        for client in (owner, watcher):
            got = await client.wait_for_event("note")
            assert got["task_id"] == f"{user}-task"
            assert got["user_id"] == user


async def test_notify_user_from_a_web_app_waits_for_the_answer(celery_ws_client, publisher, user):
    async with celery_ws_client(user_id=user) as client:
        asking = asyncio.create_task(
            asyncio.to_thread(publisher.notify_user, STEP, user, None, 2, timeout=seconds(10))
        )
        request = await client.wait_for_event("task_step_result")
        assert request["step_number"] == 2
        assert request["result"] == {"validated_rows": 1000, "errors": 5}
        await client.confirm(request["callback_id"], True, "Agree to continue execution")
        answer = await asking
    assert answer == UserConfirmation(
        proceed=True,
        feedback="Agree to continue execution",
        callback_id=request["callback_id"],
        answered_by=user,
        answered_at=answer.answered_at,
    )


async def test_notify_user_timeout_raises_instead_of_proceeding(celery_ws_settings, user):
    publisher = AsyncPublisher(settings=celery_ws_settings)
    try:
        with pytest.raises(ConfirmationTimeout):
            await publisher.notify_user(STEP, user, None, 1, timeout=0.2)
        answer = await publisher.notify_user(STEP, user, None, 1, timeout=0.2, default=False)
        assert answer.proceed is False
        assert answer.timed_out is True
    finally:
        await publisher.aclose()


async def test_web_socket_manager_runs_the_seed_api_in_process(celery_ws_redis_url, user):
    manager = WebSocketManager(
        host="127.0.0.1", port=0, settings=Settings.load(redis_url=celery_ws_redis_url)
    )
    server = await manager.start_server()
    assert server is await manager.start_server()
    try:
        url = f"ws://127.0.0.1:{manager.port}"
        async with Client(url, timeout=seconds(10)) as client:
            await client.subscribe(user_id=user)
            assert manager.get_connection_count() == 1

            await manager.broadcast_message({"type": "system_notification", "message": "maintenance"})
            await client.wait_for_event("system_notification")
            await manager.send_to_user(user, {"type": "personal_notification", "task_id": "t-1"})
            await client.wait_for_event("personal_notification", task_id="t-1")

            heartbeat = asyncio.create_task(manager.send_heartbeat(user, "t-1", interval=0.05))
            await client.wait_for(lambda _: len([f for f in client.frames if f["type"] == "heartbeat"]) >= 3)
            heartbeat.cancel()

            asking = asyncio.create_task(manager.notify_user(STEP, user, "t-1", 1, timeout=seconds(10)))
            request = await client.wait_for_event("task_step_result", task_id="t-1")
            async with asyncio.timeout(seconds(5)):
                while manager.get_status()["pending_callbacks"] < 1:
                    await asyncio.sleep(0.05)
            await client.confirm(request["callback_id"], False, "Cancel execution")
            answer = await asking
            assert answer.proceed is False
            assert answer.feedback == "Cancel execution"

            status = manager.get_status()
            assert status["running"] is True
            assert status["host"] == "127.0.0.1"
            assert status["port"] == manager.port
            assert status["active_connections"] == 1
            assert status["redis_connected"] is True

            await manager.stop_server()
            await client.closed.wait()
            assert client.connection.close_code == 1001  # going away: reconnect elsewhere
            assert manager.get_status()["running"] is False
    finally:
        await manager.stop_server()
