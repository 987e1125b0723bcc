"""Scale-out with real processes: two ``python -m celery_ws serve`` replicas on
one Redis, a real nginx in front of them (its configuration generated from
``deploy/nginx.conf``), the suite's embedded worker running the tasks.

Skipped, with the reason, only when nginx is not installed (``apt-get install
-y nginx``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from celery_ws.client import Client, Frame
from celery_ws.keys import Keys
from tests import tasks
from tests.helpers import seconds
from tests.nginx import Nginx, find_nginx
from tests.processes import ServeProcess, http_get

EVENT_TIMEOUT = seconds(20)


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = find_nginx()
    if found is None:
        pytest.skip(
            "nginx is not installed (apt-get install -y nginx, or set CELERY_WS_TEST_NGINX); "
            ".ci/run installs it"
        )
    return found


@pytest.fixture(scope="module")
def cluster(
    nginx_binary: str, celery_ws_redis_url: str, worker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess, Nginx]]:
    logs = tmp_path_factory.mktemp("scale-out")
    a = ServeProcess(celery_ws_redis_url, logs)
    b = ServeProcess(celery_ws_redis_url, logs)
    nginx: Nginx | None = None
    try:
        a.start()
        b.start()
        nginx = Nginx(nginx_binary, logs / "nginx", [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]).start()
        yield a, b, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        a.stop()
        b.stop()


class RecordingClient(Client):
    """A Client that also records every event id as it arrives, before the
    client's own de-duplication, so a test can see a duplicate the server sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived: list[str] = []

    def _accept(self, frame: Frame) -> bool:
        if isinstance(frame.get("id"), str):
            self.arrived.append(frame["id"])
        return super()._accept(frame)


def task_history(redis_url: str, task_id: str) -> list[str]:
    """Every event id stored for the task (its history stream)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [event_id.decode() for event_id, _ in client.xrange(Keys().home(None).task_events(task_id))]
    finally:
        client.close()


def event_ids(client: Client, task_id: str) -> list[str]:
    """Ids of the task's events the client received, heartbeats left out: those
    are live-only (celery_ws/lua/emit.lua keeps them out of the history)."""
    return [
        f["id"]
        for f in client.frames
        if f.get("task_id") == task_id and isinstance(f.get("id"), str) and f.get("type") != "heartbeat"
    ]


async def connect_all(clients: Sequence[Client], user: str) -> None:
    for client in clients:
        await client.__aenter__()
        reply = await client.subscribe(user_id=user)
        assert reply["type"] == "subscription_confirmed", reply


async def close_all(clients: Sequence[Client]) -> None:
    for client in clients:
        await client.close()


def connections(replica: ServeProcess) -> int:
    return int(replica.status()["active_connections"])


async def wait_connections(replica: ServeProcess, expected: int, timeout: float = seconds(5)) -> int:
    deadline = time.monotonic() + timeout
    count = await asyncio.to_thread(connections, replica)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        count = await asyncio.to_thread(connections, replica)
    return count


# -- tests -----------------------------------------------------------------------------


def test_health_and_metrics_through_nginx(cluster: tuple[ServeProcess, ServeProcess, Nginx]) -> None:
    _, _, nginx = cluster
    assert http_get(f"{nginx.http_url}/healthz")[0] == 200
    code, body = http_get(f"{nginx.http_url}/metrics")
    assert code == 200
    assert b"celery_ws_active_connections" in body
    assert http_get(f"{nginx.http_url}/status")[0] == 404  # operators ask each replica
    code, page = http_get(f"{nginx.http_url}/")
    assert code == 200
    assert b"/celery-ws.js" in page
    assert http_get(f"{nginx.http_url}/celery-ws.js")[0] == 200
    # nginx's access log leaves out query strings, where browsers put their token
    assert http_get(f"{nginx.http_url}/healthz?token=not-for-the-log")[0] == 200
    access_log = (nginx.prefix / "access.log").read_text()
    assert "GET /healthz HTTP/1.1" in access_log
    assert "not-for-the-log" not in access_log


async def test_every_client_of_the_owner_gets_every_event_on_either_replica(
    cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str, celery_ws_redis_url: str
) -> None:
    a, b, nginx = cluster
    before = (await wait_connections(a, 0), await wait_connections(b, 0))  # earlier tests' clients gone
    clients = [RecordingClient(nginx.url, timeout=EVENT_TIMEOUT) for _ in range(4)]
    try:
        await connect_all(clients, user)
        after = (await asyncio.to_thread(connections, a), await asyncio.to_thread(connections, b))
        assert after[0] > before[0] and after[1] > before[1], (
            f"round robin missed a replica: {before} -> {after}"
        )
        assert sum(after) - sum(before) == len(clients)

        started = [
            tasks.report.apply_async_for(user, (30,), {"step": "count"}),
            tasks.report.apply_async_for(user, (10,)),
        ]
        for client in clients:
            for result in started:
                await client.wait_for_event("task_succeeded", task_id=result.id)
        for result in started:
            history = task_history(celery_ws_redis_url, result.id)
            assert history, "the task stored no history"
            for client in clients:
                received = event_ids(client, result.id)
                extra = [f for f in client.frames if f.get("id") in set(received) - set(history)]
                assert received == history, f"a client missed or reordered events; not in history: {extra}"
                assert len(client.arrived) == len(set(client.arrived)), "an event arrived twice"
    finally:
        await close_all(clients)


async def test_confirmation_asked_on_one_replica_is_answered_through_the_other(
    cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str
) -> None:
    a, b, _ = cluster
    async with Client(a.url, timeout=EVENT_TIMEOUT) as on_a, Client(b.url, timeout=EVENT_TIMEOUT) as on_b:
        await on_a.subscribe(user_id=user)
        await on_b.subscribe(user_id=user)
        result = tasks.ask.apply_async_for(user, (), {"timeout": 20})
        question = await on_a.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))
        reply = await on_b.confirm(question["callback_id"], True, "through replica B")
        assert reply["type"] == "confirmation_received", reply
        done = await on_a.wait_for_event("task_succeeded", task_id=result.id)
        answered = [
            f
            for f in on_a.frames
            if f.get("type") == "confirmation_answered" and f.get("task_id") == result.id
        ]
        assert len(answered) == 1
        assert answered[0]["answered_by"] == user
        assert answered[0]["proceed"] is True
        assert done["result"]["feedback"] == "through replica B"
        assert done["result"]["answered_by"] == user
        # a second answer, through the other replica, is refused: one answer wins
        again = await on_a.confirm(question["callback_id"], False)
        assert again["type"] == "error" and again["code"] == "already_answered", again

        # and a cancel through B reaches a task A's client watches
        spinning = tasks.spin.apply_async_for(user, (0.01,))
        await on_a.wait_for_event("task_progress", task_id=spinning.id)
        assert (await on_b.cancel(spinning.id))["type"] == "cancel_received"
        await on_a.wait_for_event("task_cancelled", task_id=spinning.id)


async def test_a_stopped_replicas_clients_resume_on_the_other_without_loss(
    cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str, celery_ws_redis_url: str
) -> None:
    a, b, nginx = cluster
    assert (await wait_connections(a, 0), await wait_connections(b, 0)) == (0, 0)
    clients = [
        RecordingClient(
            nginx.url,
            timeout=EVENT_TIMEOUT,
            reconnect=True,
            backoff_initial=0.1,
            backoff_max=0.5,
            max_attempts=40,
        )
        for _ in range(4)
    ]
    try:
        await connect_all(clients, user)
        # round robin over two replicas: two of the four clients sit on A
        assert await wait_connections(a, 2) == 2, "expected 2 of 4 clients on replica A"
        originals = [client.connection for client in clients]

        result = tasks.slow_progress.apply_async_for(user, (40, 0.05))
        for client in clients:
            await client.wait_for_event("task_progress", task_id=result.id)
        await asyncio.to_thread(a.stop)  # SIGTERM while the task is still reporting

        moved = [c for c, ws in zip(clients, originals, strict=True) if ws.close_code is not None]
        stayed = [c for c in clients if c not in moved]
        assert len(moved) == 2, [ws.close_code for ws in originals]
        assert {ws.close_code for ws in originals if ws.close_code is not None} == {1001}

        for client in clients:
            await client.wait_for_event("task_succeeded", task_id=result.id)
        history = task_history(celery_ws_redis_url, result.id)
        assert history[-1] in event_ids(clients[0], result.id)
        for client in clients:
            received = event_ids(client, result.id)
            extra = [f for f in client.frames if f.get("id") in set(received) - set(history)]
            assert set(received) == set(history), (
                f"missing {sorted(set(history) - set(received))}, extra {extra}"
            )
            assert len(received) == len(set(received)), "a duplicate event reached the application"
            assert len(client.arrived) == len(set(client.arrived)), "the server sent an event twice"
        for client in moved:
            assert client.reconnects >= 1
            assert client.resubscriptions and client.resubscriptions[-1].get("recovered") is True, (
                client.resubscriptions
            )
        for client in stayed:
            assert client.reconnects == 0
        assert await wait_connections(b, len(clients)) == len(clients), "every client is on B now"
    finally:
        await close_all(clients)
        if a.process is None:
            await asyncio.to_thread(a.start)  # the module's cluster whole again
