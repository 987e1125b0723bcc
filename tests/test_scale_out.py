"""Scale-out with real processes: two ``python -m celery_ws serve`` replicas on
one Redis, a real nginx in front of them (its configuration generated from
``deploy/nginx.conf``), the suite's embedded worker running the tasks.

Skipped, with the reason, only when nginx is not installed (``apt-get install
-y nginx``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_ws.client import Client, Frame
from celery_ws.keys import Keys
from celery_ws.redis_server import free_port
from tests import tasks

REPO = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = REPO / "deploy" / "nginx.conf"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
EVENT_TIMEOUT = 20.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_nginx() -> str | None:
    configured = os.environ.get("CELERY_WS_TEST_NGINX")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body; a 4xx/5xx answer is returned, not raised."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, process: subprocess.Popen[bytes] | None, log: Path | None,
              timeout: float = START_TIMEOUT) -> None:
    """Until ``url`` answers 200; fails early when ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} at start:\n{_tail(log)}")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout}s:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


class ServeProcess:
    """A celery-ws server subprocess on a fixed loopback port (open mode unless
    ``env`` sets CELERY_WS_SECRET), restartable on the same port.

    ``command`` is what runs it, ``python -m celery_ws`` by default; ``--host``
    and ``--port`` are appended after ``serve``.
    """

    def __init__(self, redis_url: str, log_dir: Path, *, port: int | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "celery_ws"),
                 args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.port = port or free_port()
        self.command = list(command)
        self.args = list(args)
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log: Path | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        assert self.process is None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_WS_", "WEBSOCKET_"))}
        env.update(CELERY_WS_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **self.env)
        self.starts += 1
        self.log = self.log_dir / f"serve-{self.port}-{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*self.command, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_http(f"{self.http_url}/readyz", self.process, self.log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM: clients see close code 1001 (going away)."""
        process, self.process = self.process, None
        stop_process(process)

    def status(self) -> dict[str, Any]:
        import json
        code, body = http_get(f"{self.http_url}/status")
        assert code == 200, body
        return json.loads(body)  # type: ignore[no-any-return]


def render_nginx_site(template: str, upstreams: Sequence[str], listen: str) -> str:
    """``deploy/nginx.conf`` with its upstream servers and listen address replaced."""
    servers = "".join(f"    server {address};\n" for address in upstreams)
    site, found = re.subn(r"upstream\s+celery_ws\s*\{[^}]*\}", lambda _: f"upstream celery_ws {{\n{servers}}}",
                          template)
    assert found == 1, "deploy/nginx.conf: expected one 'upstream celery_ws { ... }' block"
    site, found = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", lambda m: f"{m.group(1)}listen {listen};", site)
    assert found == 1, "deploy/nginx.conf: expected one 'listen' line"
    return site


def render_nginx_main(prefix: Path, site: Path) -> str:
    """A whole nginx.conf that keeps every file inside ``prefix`` and includes ``site``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # root's tmp dirs are 0700: workers need them
    return f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def write_nginx_conf(prefix: Path, upstreams: Sequence[str], port: int) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "celery-ws.conf"
    site.write_text(render_nginx_site(NGINX_TEMPLATE.read_text(), upstreams, f"127.0.0.1:{port}"))
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_main(prefix, site))
    return conf


def nginx_command(nginx: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    return [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), *extra]


class Nginx:
    def __init__(self, nginx: str, prefix: Path, upstreams: Sequence[str]) -> None:
        self.port = free_port()
        self.prefix = prefix
        self.conf = write_nginx_conf(prefix, upstreams, self.port)
        self.command = nginx_command(nginx, prefix, self.conf)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        log = self.prefix / "stdout.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.http_url}/healthz", self.process, self.prefix / "error.log")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, signal.SIGQUIT)  # graceful; SIGKILL after STOP_TIMEOUT


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = find_nginx()
    if found is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx, or set CELERY_WS_TEST_NGINX); "
                    ".ci/run installs it")
    return found


@pytest.fixture(scope="module")
def cluster(nginx_binary: str, celery_ws_redis_url: str, worker: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, ServeProcess, Nginx]]:
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
        return [event_id.decode() for event_id, _ in client.xrange(Keys().task_events(task_id))]
    finally:
        client.close()


def event_ids(client: Client, task_id: str) -> list[str]:
    return [f["id"] for f in client.frames if f.get("task_id") == task_id and isinstance(f.get("id"), str)]


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


async def wait_connections(replica: ServeProcess, expected: int, timeout: float = 5.0) -> int:
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
    assert code == 200 and b"celery_ws_active_connections" in body
    assert http_get(f"{nginx.http_url}/status")[0] == 404  # only what deploy/nginx.conf passes through


async def test_every_client_of_the_owner_gets_every_event_on_either_replica(
        cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str, celery_ws_redis_url: str) -> None:
    a, b, nginx = cluster
    before = (await asyncio.to_thread(connections, a), await asyncio.to_thread(connections, b))
    clients = [RecordingClient(nginx.url, timeout=EVENT_TIMEOUT) for _ in range(4)]
    try:
        await connect_all(clients, user)
        after = (await asyncio.to_thread(connections, a), await asyncio.to_thread(connections, b))
        assert after[0] > before[0] and after[1] > before[1], f"round robin missed a replica: {before} -> {after}"
        assert sum(after) - sum(before) == len(clients)

        started = [tasks.report.apply_async_for(user, (30,), {"step": "count"}),
                   tasks.report.apply_async_for(user, (10,))]
        for client in clients:
            for result in started:
                await client.wait_for_event("task_succeeded", task_id=result.id)
        for result in started:
            history = task_history(celery_ws_redis_url, result.id)
            assert history, "the task stored no history"
            for client in clients:
                received = event_ids(client, result.id)
                assert received == history, "a client missed or reordered events"
                assert len(client.arrived) == len(set(client.arrived)), "an event arrived twice"
    finally:
        await close_all(clients)


async def test_confirmation_asked_on_one_replica_is_answered_through_the_other(
        cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str) -> None:
    a, b, _ = cluster
    async with Client(a.url, timeout=EVENT_TIMEOUT) as on_a, Client(b.url, timeout=EVENT_TIMEOUT) as on_b:
        await on_a.subscribe(user_id=user)
        await on_b.subscribe(user_id=user)
        result = tasks.ask.apply_async_for(user, (), {"timeout": 20})
        question = await on_a.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))
        reply = await on_b.confirm(question["callback_id"], True, "through replica B")
        assert reply["type"] == "confirmation_received", reply
        answered = await on_a.wait_for_event("confirmation_answered", task_id=result.id)
        assert answered["answered_by"] == user and answered["proceed"] is True
        done = await on_a.wait_for_event("task_succeeded", task_id=result.id)
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
        cluster: tuple[ServeProcess, ServeProcess, Nginx], user: str, celery_ws_redis_url: str) -> None:
    a, b, nginx = cluster
    base_a = await asyncio.to_thread(connections, a)
    clients = [RecordingClient(nginx.url, timeout=EVENT_TIMEOUT, reconnect=True, backoff_initial=0.1,
                               backoff_max=0.5, max_attempts=40) for _ in range(4)]
    try:
        await connect_all(clients, user)
        # round robin over two replicas: two of the four clients sit on A
        assert await wait_connections(a, base_a + 2) == base_a + 2, "expected 2 of 4 clients on replica A"
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
            assert set(received) == set(history), (
                f"missing {sorted(set(history) - set(received))}, extra {sorted(set(received) - set(history))}")
            assert len(received) == len(set(received)), "a duplicate event reached the application"
            assert len(client.arrived) == len(set(client.arrived)), "the server sent an event twice"
        for client in moved:
            assert client.reconnects >= 1
            assert client.resubscriptions and client.resubscriptions[-1].get("recovered") is True, \
                client.resubscriptions
        for client in stayed:
            assert client.reconnects == 0
        # every client is on B now
        assert await wait_connections(b, await asyncio.to_thread(connections, b)) >= len(clients)
    finally:
        await close_all(clients)
        if a.process is None:
            await asyncio.to_thread(a.start)  # the module's cluster whole again
