"""Worker-side benchmarks: the cost of reporting, and the confirmation round trip.

Tasks run in this process with ``task.apply(..., headers={"celery_ws_user": ...})``,
so ``self.progress()`` and ``confirm_step()`` run on a real ProgressTask with
an owner and a real emitter thread writing to a real Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from typing import Any

import redis

from .common import PY, Child, percentile, summary

BLOCK = b"x" * 32768  # the per-iteration "work": sha256 over 32 KiB (about 20-30 us)


def _work() -> None:
    hashlib.sha256(BLOCK).digest()


def make_app(redis_url: str) -> tuple[Any, dict[str, Any]]:
    from celery import Celery

    from celery_ws import CeleryWS, ProgressTask, TaskStepResult, confirm_step

    app = Celery("bench", broker="memory://", backend=redis_url, set_as_current=False)
    app.conf.update(task_always_eager=False, result_extended=False)
    CeleryWS(app, redis_url=redis_url)

    @app.task(base=ProgressTask, bind=True, name="bench.loop")
    def loop(self: ProgressTask, n: int, work: bool, report: str) -> float:
        t0 = time.perf_counter()
        if report == "progress":
            for i in range(n):
                if work:
                    _work()
                self.progress(i + 1, n, "working")
        elif report == "update_state":
            for i in range(n):
                if work:
                    _work()
                self.update_state(state="PROGRESS", meta={"current": i + 1, "total": n})
        else:
            for _ in range(n):
                if work:
                    _work()
        return time.perf_counter() - t0

    @app.task(base=ProgressTask, bind=True, name="bench.steps")
    def steps(self: ProgressTask, n: int) -> list[float]:
        from celery_ws.worker.integration import CeleryWS as WS

        emitter = WS.for_app(self.app).emitter()
        emitter.flush(5)
        single = []
        for i in range(n):
            t0 = time.perf_counter()
            self.step_result(
                TaskStepResult(step=f"s{i}", message="validated", status="completed", result={"rows": i})
            )
            emitter.flush(5)
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(n):
            self.step_result(
                TaskStepResult(step=f"b{i}", message="validated", status="completed", result={"rows": i})
            )
        call = time.perf_counter() - t0
        emitter.flush(30)
        total = time.perf_counter() - t0
        return [single, call / n, total / n]

    @app.task(base=ProgressTask, bind=True, name="bench.confirm")
    def confirm(self: ProgressTask, n: int, pace: float) -> list[tuple[float, float]]:
        out = []
        for i in range(n):
            time.sleep(pace)
            t_ask = time.time()
            answer = confirm_step(
                TaskStepResult(step="review", message=f"ok {i}?", status="waiting"), step=i, timeout=10
            )
            t_back = time.time()
            out.append((t_back - float(answer.feedback), t_back - t_ask))
        return out

    return app, {"loop": loop, "steps": steps, "confirm": confirm}


def _run(task: Any, *args: Any) -> Any:
    result = task.apply(args=args, headers={"celery_ws_user": "bench_user"})
    if result.failed():
        raise RuntimeError(f"{task.name} failed: {result.result!r}")
    return result.result


def run_emit(redis_url: str, repeats: int, n: int, log: Any) -> dict[str, Any]:
    _app, tasks = make_app(redis_url)
    loop = tasks["loop"]
    r = redis.Redis.from_url(redis_url)
    out: dict[str, Any] = {"iterations": n}
    _run(loop, 1000, False, "progress")  # warm up: emitter thread, scripts
    per_call: dict[str, list[float]] = {
        "progress": [],
        "update_state": [],
        "socketio_emit": [],
        "publish": [],
        "noop": [],
    }
    small = max(200, n // 50)
    mid = max(
        1000, n // 20
    )  # socketio emit and PUBLISH: 5,000 calls (0.3-0.5 ms each; 10,000 gave the same medians)
    import socketio

    manager = socketio.RedisManager(redis_url, write_only=True)
    body = {"type": "task_progress", "task_id": "t1", "user_id": "bench_user", "current": 1, "total": n}
    for _ in range(repeats):
        per_call["noop"].append(_run(loop, n, False, "none") / n)
        per_call["progress"].append(_run(loop, n, False, "progress") / n)
        per_call["update_state"].append(_run(loop, small, False, "update_state") / small)
        t0 = time.perf_counter()
        for i in range(mid):
            manager.emit("progress", {**body, "current": i}, room="bench_user")
        per_call["socketio_emit"].append((time.perf_counter() - t0) / mid)
        t0 = time.perf_counter()
        for i in range(mid):
            r.publish("bench:progress", json.dumps({**body, "current": i}))
        per_call["publish"].append((time.perf_counter() - t0) / mid)
    out["per_call_us"] = {k: summary([v * 1e6 for v in vals]) for k, vals in per_call.items()}
    out["calls"] = {"progress": n, "update_state": small, "socketio_emit": mid, "publish": mid}
    # net cost of progress(): minus the bare loop
    out["per_call_us"]["progress_net"] = summary(
        [(p - z) * 1e6 for p, z in zip(per_call["progress"], per_call["noop"], strict=True)]
    )
    log("emit per call (us): " + ", ".join(f"{k} {v['median']:.2f}" for k, v in out["per_call_us"].items()))

    with_p, without = [], []
    for _ in range(repeats):  # interleaved, so a noisy neighbour hits both
        without.append(_run(loop, n, True, "none"))
        with_p.append(_run(loop, n, True, "progress"))
    out["task"] = {
        "work_us_per_iteration": summary([w / n * 1e6 for w in without]),
        "without_s": summary(without),
        "with_s": summary(with_p),
        "slowdown_pct": summary([100 * (a / b - 1) for a, b in zip(with_p, without, strict=True)]),
    }
    log(
        f"task slowdown with {n} progress() calls: {out['task']['slowdown_pct']['median']:+.2f} % "
        f"(work {out['task']['work_us_per_iteration']['median']:.1f} us/iteration)"
    )

    # one step result, until stored, vs a bare pipelined write of the same event
    steps_n = 300
    single, amortized_call, amortized_total = [], [], []
    bare_single, bare_batch = [], []
    event_json = json.dumps(
        {
            "type": "task_step_result",
            "task_id": "t1",
            "user_id": "bench_user",
            "step": "s",
            "message": "validated",
            "status": "completed",
            "result": {"rows": 1},
            "completed": False,
            "error_code": None,
            "error_message": None,
            "step_number": None,
            "callback_id": None,
            "timestamp": time.time(),
        }
    )

    def bare(pipe: Any) -> None:
        fields = {"d": event_json, "u": "bench_user", "t": "t1", "y": "task_step_result"}
        pipe.xadd("bare:events", fields, maxlen=100000, approximate=True)
        pipe.xadd("bare:user:bench_user", fields, maxlen=1000, approximate=True)
        pipe.expire("bare:user:bench_user", 86400)
        pipe.xadd("bare:task:t1", fields, maxlen=1000, approximate=True)
        pipe.expire("bare:task:t1", 86400)
        pipe.hset("bare:task:t1:state", "state:step", event_json)

    for _ in range(repeats):
        s, call, total = _run(tasks["steps"], steps_n)
        single.append(statistics_median(s))
        amortized_call.append(call)
        amortized_total.append(total)
        times = []
        for _ in range(steps_n):
            t0 = time.perf_counter()
            with r.pipeline(transaction=False) as pipe:
                bare(pipe)
                pipe.execute()
            times.append(time.perf_counter() - t0)
        bare_single.append(statistics_median(times))
        t0 = time.perf_counter()
        with r.pipeline(transaction=False) as pipe:
            for _ in range(steps_n):
                bare(pipe)
            pipe.execute()
        bare_batch.append((time.perf_counter() - t0) / steps_n)
    out["step_result"] = {
        "single_until_stored_us": summary([x * 1e6 for x in single]),
        "bare_pipelined_single_us": summary([x * 1e6 for x in bare_single]),
        "ratio_single": summary([a / b for a, b in zip(single, bare_single, strict=True)]),
        "caller_cost_us": summary([x * 1e6 for x in amortized_call]),
        "amortized_until_stored_us": summary([x * 1e6 for x in amortized_total]),
        "bare_pipelined_batch_us": summary([x * 1e6 for x in bare_batch]),
        "ratio_amortized": summary([a / b for a, b in zip(amortized_total, bare_batch, strict=True)]),
    }
    st = out["step_result"]
    log(
        f"step_result: single until stored {st['single_until_stored_us']['median']:.0f} us vs bare pipelined "
        f"{st['bare_pipelined_single_us']['median']:.0f} us (x{st['ratio_single']['median']:.2f}); caller cost "
        f"{st['caller_cost_us']['median']:.1f} us"
    )
    r.close()
    return out


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


# -- confirmation round trip --------------------------------------------------------------


async def _confirm_client(url: str, user: str) -> None:
    from celery_ws.client import Client

    async with Client(url) as client:
        await client.subscribe(user_id=user)
        print(json.dumps({"ready": True}), flush=True)
        answered = 0
        async for event in client.events():
            if event.get("type") == "task_step_result" and event.get("callback_id"):
                # stamped just before it leaves; confirm_step() returns the feedback
                await client.send(
                    {
                        "action": "confirm",
                        "callback_id": event["callback_id"],
                        "proceed": True,
                        "feedback": repr(time.time()),
                    }
                )
                answered += 1
                if answered > 100000:
                    return


def _floor_helper(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench:floor")
    print(json.dumps({"ready": True}), flush=True)
    for message in pubsub.listen():
        key = message["data"]
        if key == b"stop":
            return
        r.lpush(key, repr(time.time()))


#: the two cadences of section 4, as (s between two questions, share of the questions):
#: back to back (every process busy, as the floor has always been measured), and one
#: per 60 ms, a client's default rate limit (20 frames/s), after which every process
#: on the path wakes from idle (a sixth as many: they take 60 ms each)
CONFIRM_CADENCES = {"": (0.0, 1.0), "paced_": (0.06, 1 / 6)}


def _floor(r: redis.Redis, n: int, pace: float) -> tuple[list[float], list[float]]:
    """The Redis floor: PUBLISH -> the helper process's LPUSH -> BLPOP wakes here."""
    full, oneway = [], []
    for i in range(n):
        time.sleep(pace)
        key = f"bench:floor:{i}"
        t0 = time.time()
        r.publish("bench:floor", key)
        _, pushed = r.blpop([key], timeout=5)
        t1 = time.time()
        full.append((t1 - t0) * 1e3)
        oneway.append((t1 - float(pushed)) * 1e3)
    return full, oneway


def run_confirm(redis_url: str, repeats: int, n_questions: int, log: Any) -> dict[str, Any]:
    from .bench_ws import Stack

    _app, tasks = make_app(redis_url)
    # a server (its client process stays idle) whose rate limit lets questions come back to back
    unlimited = {"CELERY_WS_RATE_LIMIT": "100000", "CELERY_WS_RATE_BURST": "100000"}
    stack = Stack("celery-ws", redis_url, 1, procs=1, server_env=unlimited)
    url = f"ws://127.0.0.1:{stack.servers[0].port}"
    client = Child([PY, "-m", "benchmarks.bench_worker", "confirm-client", url, "bench_user"])
    helper = Child([PY, "-m", "benchmarks.bench_worker", "floor-helper", redis_url])
    client.read(30)
    helper.read(30)
    r = redis.Redis.from_url(redis_url, socket_timeout=None)
    figures = ("cws_p50", "cws_p99", "cws_max", "cws_rt_p50", "floor_p50", "floor_p99", "floor_oneway_p50")
    runs: dict[str, list[float]] = {f"{cadence}{k}": [] for cadence in CONFIRM_CADENCES for k in figures}
    try:
        _run(tasks["confirm"], 3, 0.0)  # warm up
        for _ in range(repeats):
            for cadence, (pace, share) in CONFIRM_CADENCES.items():  # interleaved: both see the same machine
                n = max(1, round(n_questions * share))
                pairs = _run(tasks["confirm"], n, pace)
                one_way = [p[0] * 1e3 for p in pairs]
                runs[f"{cadence}cws_p50"].append(percentile(one_way, 50))
                runs[f"{cadence}cws_p99"].append(percentile(one_way, 99))
                runs[f"{cadence}cws_max"].append(max(one_way))
                runs[f"{cadence}cws_rt_p50"].append(percentile([p[1] * 1e3 for p in pairs], 50))
                full, oneway = _floor(r, n, pace)
                runs[f"{cadence}floor_p50"].append(percentile(full, 50))
                runs[f"{cadence}floor_p99"].append(percentile(full, 99))
                runs[f"{cadence}floor_oneway_p50"].append(percentile(oneway, 50))
        r.publish("bench:floor", "stop")
    finally:
        client.stop()
        helper.stop()
        stack.close()
        r.close()
    out: dict[str, Any] = {k: summary(v) for k, v in runs.items()}
    for cadence, (_pace, share) in CONFIRM_CADENCES.items():
        out[f"{cadence}n"] = max(1, round(n_questions * share))
        out[f"{cadence}ratio_p50_vs_floor"] = summary(
            [a / b for a, b in zip(runs[f"{cadence}cws_p50"], runs[f"{cadence}floor_p50"], strict=True)]
        )
        log(
            f"confirm{' (paced)' if cadence else ''}: client->confirm_step p50 "
            f"{out[f'{cadence}cws_p50']['median']:.2f} ms p99 {out[f'{cadence}cws_p99']['median']:.2f} ms; "
            f"floor p50 {out[f'{cadence}floor_p50']['median']:.2f} ms "
            f"(x{out[f'{cadence}ratio_p50_vs_floor']['median']:.2f})"
        )
    return out


if __name__ == "__main__":
    if sys.argv[1] == "confirm-client":
        asyncio.run(_confirm_client(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "floor-helper":
        _floor_helper(sys.argv[2])
