"""Deferred questions (``self.ask``) vs blocking ones (``confirm_step``), side by side.

One real ``celery worker -P threads -c 2`` and one ``celery-ws serve --app
benchmarks.deferred_app:app`` (it sends continuations), on the run's Redis:

* slots: N questions left open at once; tasks between start and return (their
  own INCR/DECR in Redis) and ``inspect().active()``, blocking vs deferred;
* latency, all in one client process on one clock: client ``confirm`` sent →
  the continuation's ``task_started`` received (deferred); client ``confirm``
  sent → the task back from ``confirm_step()`` (blocking, stamped in the
  answer); ``apply_async`` of an ordinary task → its ``task_started`` received
  (the broker's own floor).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import PY, ROOT, percentile

QUEUE = "bench-deferred"
USER = "bench_deferred_user"
CONCURRENCY = 2


def _env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_WS_", "WEBSOCKET_"))}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), CELERY_WS_REDIS_URL=redis_url)
    return env


def _spawn(args: list[str], redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, env=_env(redis_url), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "raw": values,
    }


async def _question(client: Any, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    frame: dict[str, Any] = await client.wait_for(
        lambda f: f.get("task_id") == task_id and f.get("callback_id"), timeout=timeout
    )
    return frame


async def _measure(url: str, n_open: int, samples: int, log: Any) -> dict[str, Any]:
    from celery_ws.client import Client

    from . import deferred_app as d

    r = d.app.backend.client
    out: dict[str, Any] = {"concurrency": CONCURRENCY, "open_questions": n_open, "samples": samples}

    def active() -> int:
        replies = d.app.control.inspect(timeout=1.0).active() or {}
        return sum(len(v) for v in replies.values())

    async with Client(url, timeout=30) as client:
        await client.subscribe(user_id=USER)
        # -- slots held by N open questions
        slots: dict[str, Any] = {}
        for form, task in (("blocking", d.block), ("deferred", d.ask)):
            r.set(d.RUNNING, 0)
            sent = [task.apply_async_for(USER, (), {"timeout": 60.0}) for _ in range(n_open)]
            # the questions that can be open at once: all N deferred; blocking, one per free slot
            await asyncio.sleep(3.0)
            asked = [f for f in client.frames if f.get("callback_id") and f.get("type") == "task_step_result"]
            ids = {res.id for res in sent}
            open_now = {f["task_id"]: f for f in asked if f["task_id"] in ids}
            running = int(r.get(d.RUNNING) or 0)
            in_active = await asyncio.to_thread(active)
            slots[form] = {
                "sent": n_open,
                "questions_open": len(open_now),
                "tasks_running_markers": running,
                "tasks_active_inspect": in_active,
                "slots_per_open_question": running / len(open_now) if open_now else None,
            }
            log(
                f"deferred: {form}: {len(open_now)} of {n_open} questions open, {running} tasks running ({in_active} by inspect)"
            )
            # answer all, including the blocking ones that only ask once a slot frees up
            answered: set[str] = set()
            deadline = time.monotonic() + 60
            while len(answered) < n_open and time.monotonic() < deadline:
                for res in sent:
                    if res.id in answered:
                        continue
                    try:
                        q = await _question(client, res.id, timeout=0.2)
                    except TimeoutError:
                        continue
                    await client.send(
                        {
                            "action": "confirm",
                            "callback_id": q["callback_id"],
                            "proceed": True,
                            "feedback": repr(time.time()),
                        }
                    )
                    answered.add(res.id)
                    await asyncio.sleep(0.06)  # below the server's 20 frames/s per client
            for res in sent:
                await asyncio.to_thread(res.get, 30)
        out["slots"] = slots

        # -- latencies
        deferred, blocking, floor = [], [], []
        for i in range(samples):
            # the broker's floor: apply_async -> task_started of an ordinary task
            t0 = time.perf_counter()
            res = d.noop.apply_async_for(USER)
            await client.wait_for_event("task_started", task_id=res.id, timeout=20)
            floor.append((time.perf_counter() - t0) * 1e3)
            # deferred: confirm sent -> the continuation's task_started
            first = d.ask.apply_async_for(USER, (), {"timeout": 60.0})
            q = await _question(client, first.id)
            value = await asyncio.to_thread(first.get, 20)
            continuation = value["continuation_id"]
            await asyncio.sleep(0.06)
            t0 = time.perf_counter()
            await client.send(
                {"action": "confirm", "callback_id": q["callback_id"], "proceed": True, "feedback": "x"}
            )
            await client.wait_for_event("task_started", task_id=continuation, timeout=20)
            deferred.append((time.perf_counter() - t0) * 1e3)
            # blocking: confirm sent -> confirm_step() returns (stamped in the answer)
            res = d.block.apply_async_for(USER, (), {"timeout": 30.0})
            q = await _question(client, res.id)
            await asyncio.sleep(0.06)
            await client.send(
                {
                    "action": "confirm",
                    "callback_id": q["callback_id"],
                    "proceed": True,
                    "feedback": repr(time.time()),
                }
            )
            blocking.append(await asyncio.to_thread(res.get, 20) * 1e3)
            await asyncio.sleep(0.06)
            if i % 10 == 9:
                log(f"deferred: {i + 1}/{samples} samples")
        out["deferred_answer_to_continuation_started_ms"] = _stats(deferred)
        out["blocking_answer_to_wakeup_ms"] = _stats(blocking)
        out["broker_apply_to_started_ms"] = _stats(floor)
    return out


def run_deferred(redis_url: str, n_open: int, samples: int, log: Any) -> dict[str, Any]:
    from celery_ws.testing.redis_server import free_port

    from . import deferred_app as d

    d.app.conf.update(broker_url=redis_url, result_backend=redis_url)
    logs = Path(tempfile.mkdtemp(prefix="bench-deferred-"))  # the server's and the worker's logs
    port = free_port()
    serve_cmd = Path(sys.executable).parent / "celery-ws"
    server = _spawn(
        [
            *([str(serve_cmd)] if serve_cmd.is_file() else [PY, "-m", "celery_ws"]),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--app",
            "benchmarks.deferred_app:app",
        ],
        redis_url,
        logs / "deferred-serve.log",
    )
    name = f"{QUEUE}@localhost"
    worker = _spawn(
        [
            PY,
            "-m",
            "celery",
            "-A",
            "benchmarks.deferred_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(CONCURRENCY),
            "-Q",
            QUEUE,
            "-n",
            name,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ],
        redis_url,
        logs / "deferred-worker.log",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.0.1:{port}/readyz", timeout=1
                ) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"celery-ws serve --app did not become ready ({logs}/deferred-serve.log)")
            time.sleep(0.1)
        while not d.app.control.ping(destination=[name], timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the worker did not start ({logs}/deferred-worker.log)")
        return asyncio.run(asyncio.wait_for(_measure(f"ws://127.0.0.1:{port}", n_open, samples, log), 300))
    finally:
        _stop(worker)
        _stop(server)
