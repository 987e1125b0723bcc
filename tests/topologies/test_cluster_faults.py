"""A Redis Cluster master killed mid-task (SIGKILL) while a prefork worker,
a ``celery-ws serve`` and a client keep going; the cluster promotes the
master's replica, and none of the three is restarted.

What a killed master may lose is Redis' own window: writes it acknowledged
but had not yet sent to its replica, and writes made before each process
learned of the new master. Everything the new master has must reach the
client, once and in order; the steps lost fall in one short window; a
``confirm_step()`` waiting through the failover wakes on the answer given
after it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from celery import Celery

from celery_ws import Publisher, Settings, issue_token
from celery_ws.client import Client
from celery_ws.testing.redis_topologies import RedisClusterNodes, RedisNode
from tests import tasks
from tests.helpers import seconds
from tests.processes import ServeProcess, WorkerProcess
from tests.topologies.delivery import assert_lost_in_one_window, assert_whole, steps, stored

SECRET = "cluster-fault-secret-of-at-least-32-bytes"
STEPS = 30
STEP_DELAY = 0.2
#: steps a task may write before every process follows the new master: the
#: cluster's node timeout (2 s) and election, then a refresh of the slots
LOST_STEPS_BOUND = int(6 / STEP_DELAY)


def _owner_on(publisher: Publisher, master: RedisNode) -> str:
    """A user whose home is on ``master``."""
    keys = publisher.settings.keys
    for _ in range(10_000):
        user = f"user-{uuid.uuid4().hex[:12]}"
        if publisher.redis.get_node_from_key(keys.home(user).none).port == master.port:
            return user
    raise AssertionError(f"no home on {master.address}")


async def test_a_master_killed_mid_task_loses_nothing_its_replica_has(
    app: Celery, celery_ws_redis_url: str, redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    env = {
        "CELERY_WS_SECRET": SECRET,
        "CELERY_WS_KEY_PREFIX": prefix,
        "CELERY_RESULT_BACKEND": celery_ws_redis_url,
    }
    queue = f"cluster-fault-{prefix}"
    worker = WorkerProcess(app, redis_cluster.url, tmp_path, queue, broker_url=celery_ws_redis_url, env=env)
    server = ServeProcess(redis_cluster.url, tmp_path, env=env)
    settings = Settings.load(redis_url=redis_cluster.url, secret=SECRET, key_prefix=prefix)
    publisher = Publisher(settings=settings)
    master = redis_cluster.masters()[0]
    user = _owner_on(publisher, master)
    killed: RedisNode | None = None
    worker.start()
    try:
        server.start()
        async with Client(
            server.url,
            token=issue_token(user, settings=settings),
            reconnect=True,
            backoff_initial=0.1,
            backoff_max=0.5,
            timeout=seconds(10),
        ) as client:
            await client.subscribe(user_id=user)
            waiting = tasks.ask.apply_async_for(user, (), {"timeout": seconds(90)}, queue=queue)
            request = await client.wait_for(lambda f: f.get("task_id") == waiting.id and f.get("callback_id"))
            running = tasks.step_by_step.apply_async_for(user, (STEPS, STEP_DELAY), queue=queue)
            await client.wait_for_event("task_step_result", task_id=running.id, step="step-2")
            killed = master
            await asyncio.to_thread(redis_cluster.kill_master, master)
            done = await client.wait_for_event("task_succeeded", task_id=running.id, timeout=seconds(40))
            # the question asked before the failover, answered after it
            await client.confirm(request["callback_id"], True, "after the failover")
            answered = await client.wait_for_event("task_succeeded", task_id=waiting.id, timeout=seconds(30))
        assert done["result"] == STEPS
        assert answered["result"]["feedback"] == "after the failover"
        assert (server.starts, worker.starts) == (1, 1), "nothing was restarted"
        home = settings.keys.home(user)
        for task_id in (running.id, waiting.id):
            assert_whole(client, stored(publisher.redis, home, task_id), task_id)
        assert_lost_in_one_window(steps(list(client.frames), running.id), STEPS, LOST_STEPS_BOUND)
    finally:
        publisher.close()
        server.stop()
        worker.stop()
        if killed is not None:
            redis_cluster.restart(killed)  # back as a replica: the session's cluster stays whole
        print(f"server log:\n{server.logs()}\nworker log:\n{worker.logs()}")  # shown when it fails
