"""``celery-ws serve --workers 2`` as a real process tree: a supervisor and two
server processes sharing one port (``SO_REUSEPORT``), the suite's worker
running the tasks.

Which process holds a connection is read from Linux's ``/proc``: the server
side of a client's TCP connection (``/proc/net/tcp``, matched by the client's
port) and the process whose file descriptors include that socket. The kernel
spreads connections over the processes by a hash of their addresses, so tests
open clients until each process holds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_ws.client import Client
from celery_ws.settings import Settings
from celery_ws.testing.redis_server import free_port
from tests import tasks
from tests.e2e.test_scale_out import event_ids, task_history
from tests.helpers import eventually, seconds
from tests.processes import ServeProcess, http_get, run

EVENT_TIMEOUT = seconds(20)
#: clients opened at most to find both processes (the chance that 40 all land
#: on one of two is 2**-39)
MAX_CLIENTS = 40


# -- which process holds a connection -------------------------------------------------


def server_processes(supervisor: ServeProcess) -> list[int]:
    """The supervisor's children: the server processes."""
    assert supervisor.process is not None
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor.process.pid)], capture_output=True, text=True, check=False
    ).stdout
    return sorted(int(pid) for pid in out.split())


_LISTEN = "0A"  # the TCP state in /proc/net/tcp


def _sockets(port: int, client_port: int | None = None) -> set[str]:
    """Inodes of the sockets on local ``port``: the server side of the
    connection from ``client_port``, or (None) the listening ones."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                local, remote, state, inode = (row.split()[i] for i in (1, 2, 3, 9))
                if int(local.rsplit(":", 1)[1], 16) != port:
                    continue
                if (
                    state == _LISTEN
                    if client_port is None
                    else int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    found.add(inode)
    return found


def _holders(inodes: set[str], pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a socket among ``inodes``."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    holding = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                        holding.add(pid)
    return holding


def holder(client: Client, server_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds ``client``'s connection."""
    holding = _holders(_sockets(server_port, client.connection.local_address[1]), pids)
    return holding.pop() if len(holding) == 1 else None


def listening(supervisor: ServeProcess, pids: list[int]) -> set[int]:
    """Which of ``pids`` listen on the supervisor's port."""
    return _holders(_sockets(supervisor.port), pids)


def alive_processes(pids: list[int]) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


async def wait_processes(supervisor: ServeProcess, count: int, *, other_than: int | None = None) -> list[int]:
    """The server processes once there are ``count`` of them, each listening
    on the port (and none being ``other_than``)."""

    def ready(pids: list[int]) -> bool:
        return len(pids) == count and other_than not in pids and listening(supervisor, pids) == set(pids)

    deadline = time.monotonic() + seconds(30)
    pids = server_processes(supervisor)
    while not ready(pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        pids = server_processes(supervisor)
    assert ready(pids), f"server processes: {pids}\n{supervisor.logs()}"
    return pids


async def clients_on_each(
    supervisor: ServeProcess, pids: list[int], user: str, clients: list[Client]
) -> dict[int, list[Client]]:
    """Open subscribed clients (appended to ``clients``, for the caller to
    close) until every process in ``pids`` holds at least one; by process."""
    held: dict[int, list[Client]] = {pid: [] for pid in pids}
    for _ in range(MAX_CLIENTS):
        if all(held.values()):
            break
        client = Client(supervisor.url, timeout=EVENT_TIMEOUT, keep_frames=None)
        clients.append(client)
        await client.__aenter__()
        reply = await client.subscribe(user_id=user)
        assert reply["type"] == "subscription_confirmed", reply
        pid = holder(client, supervisor.port, pids)
        assert pid is not None, (
            f"no server process holds the connection from port {client.connection.local_address[1]}"
        )
        held[pid].append(client)
    assert all(held.values()), {pid: len(on) for pid, on in held.items()}
    return held


def metric(supervisor: ServeProcess, name: str) -> float:
    code, body = http_get(f"{supervisor.http_url}/metrics")
    assert code == 200, body
    found = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def metric_settles(supervisor: ServeProcess, name: str, expected: float) -> list[float]:
    """Scrapes of ``name`` (each maybe answered by another process) until one
    shows ``expected`` for three scrapes in a row, or the time is up."""
    deadline = time.monotonic() + seconds(10)
    seen = [await asyncio.to_thread(metric, supervisor, name)]
    while seen[-3:] != [expected] * 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        seen.append(await asyncio.to_thread(metric, supervisor, name))
    return seen


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def supervisor(celery_ws_redis_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    serving = ServeProcess(celery_ws_redis_url, tmp_path, args=("--workers", "2")).start()
    try:
        yield serving
    finally:
        serving.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


# -- tests -----------------------------------------------------------------------------


async def test_both_processes_deliver_events_and_metrics_sum_them(
    supervisor: ServeProcess, worker: Any, user: str, clients: list[Client], celery_ws_redis_url: str
) -> None:
    pids = await wait_processes(supervisor, 2)
    held = await clients_on_each(supervisor, pids, user, clients)

    result = tasks.report.apply_async_for(user, (5,), {"step": "count"})
    for client in clients:
        await client.wait_for_event("task_succeeded", task_id=result.id)
    history = task_history(celery_ws_redis_url, result.id)
    assert len(history) > 2, history
    for client in clients:  # every event, in order, whichever process holds the client
        assert event_ids(client, result.id) == history

    # each process holds only its own clients; /metrics, whichever answers, sums them
    assert all(0 < len(on) < len(clients) for on in held.values())
    seen = await metric_settles(supervisor, "celery_ws_active_connections", len(clients))
    assert seen[-3:] == [len(clients)] * 3, seen
    accepted = await asyncio.to_thread(metric, supervisor, 'celery_ws_connections_total{outcome="accepted"}')
    assert accepted == len(clients)
    # /status and celery-ws status answer for the one process the request reached
    status = supervisor.status()
    assert status["active_connections"] in {len(on) for on in held.values()}
    assert run([sys.executable, "-m", "celery_ws", "status", "--url", supervisor.http_url]).returncode == 0


async def test_sigterm_to_the_supervisor_closes_every_client_with_1001(
    supervisor: ServeProcess, user: str, clients: list[Client]
) -> None:
    pids = await wait_processes(supervisor, 2)
    await clients_on_each(supervisor, pids, user, clients)
    process = supervisor.process
    assert process is not None

    os.kill(process.pid, signal.SIGTERM)  # the supervisor only: it forwards the signal
    for client in clients:
        async with asyncio.timeout(seconds(10)):
            await client.closed.wait()
    assert {client.connection.close_code for client in clients} == {1001}
    assert await asyncio.to_thread(process.wait, seconds(20)) == 0
    assert not alive_processes(pids)  # stopped, and reaped by the supervisor


async def test_a_killed_process_is_replaced_and_the_port_keeps_serving(
    supervisor: ServeProcess, worker: Any, user: str, clients: list[Client]
) -> None:
    pids = await wait_processes(supervisor, 2)
    held = await clients_on_each(supervisor, pids, user, clients)
    killed, survivor = pids
    os.kill(killed, signal.SIGKILL)
    for client in held[killed]:
        async with asyncio.timeout(seconds(10)):
            await client.closed.wait()
    alive = [client for client in clients if client not in held[killed]]
    # gone, its listening socket with it (a connection that reached that socket's
    # queue before is reset, as with one process: clients reconnect)
    assert await eventually(lambda: bool(alive_processes([killed])), False) is False

    # the survivor keeps the port while the supervisor starts a replacement
    async with Client(supervisor.url, timeout=EVENT_TIMEOUT) as meanwhile:
        assert (await meanwhile.subscribe(user_id=user))["type"] == "subscription_confirmed"
    replaced = await wait_processes(supervisor, 2, other_than=killed)
    assert survivor in replaced
    assert "exited unexpectedly (killed by SIGKILL)" in supervisor.logs()

    newcomers: list[Client] = []
    try:
        held_now = await clients_on_each(supervisor, replaced, user, newcomers)
        result = tasks.report.apply_async_for(user, (3,))
        for client in [*alive, *newcomers]:
            await client.wait_for_event("task_succeeded", task_id=result.id)
        # the killed process's connections left the sum; those on the new one joined it
        open_now = len(alive) + len(newcomers)
        seen = await metric_settles(supervisor, "celery_ws_active_connections", open_now)
        assert seen[-3:] == [open_now] * 3, seen
        assert all(held_now.values())
    finally:
        for client in newcomers:
            await client.close()


def test_through_celery_and_stopped_with_sigterm(celery_ws_redis_url: str, tmp_path: Path) -> None:
    via_celery = ServeProcess(
        celery_ws_redis_url,
        tmp_path,
        command=(sys.executable, "-m", "celery", "-A", "tests.prefork_app", "ws"),
        args=("--workers", "2"),
    ).start()
    try:
        pids = asyncio.run(wait_processes(via_celery, 2))
        assert via_celery.process is not None
        for pid in pids:  # each process is the same celery command, supervised
            command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            assert command[command.index("-A") + 1] == "tests.prefork_app"
            assert "--supervisor-fd" in command
        os.kill(via_celery.process.pid, signal.SIGTERM)
        assert via_celery.process.wait(seconds(20)) == 0
    finally:
        via_celery.stop()


def test_a_configuration_that_cannot_start_stops_the_supervisor() -> None:
    """Open mode on a public address is refused by each process before it
    listens: the supervisor stops with its status instead of restarting it."""
    started = time.monotonic()
    done = run(
        [
            sys.executable,
            "-m",
            "celery_ws",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--workers",
            "2",
        ]
    )
    assert done.returncode == 1, done.stderr
    assert "refusing open mode" in done.stderr
    assert "before it listened" in done.stderr
    assert "starting another" not in done.stderr
    assert time.monotonic() - started < seconds(20)


def test_workers_needs_a_fixed_port() -> None:
    done = run([sys.executable, "-m", "celery_ws", "serve", "--port", "0", "--workers", "2"])
    assert done.returncode == 1
    assert "--workers needs a fixed port" in done.stderr


def test_auto_is_one_process_per_cpu_this_process_may_use() -> None:
    assert Settings.load(workers="auto").workers == len(os.sched_getaffinity(0))
    assert Settings.load().workers == 1
