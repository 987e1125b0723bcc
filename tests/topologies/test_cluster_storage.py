"""celery-ws' storage on a real three-master Redis Cluster, without a server:
events, questions and cancels each run in their owner's home (one hash slot),
so the owners spread over the masters and no script crosses slots.

The end-to-end tests with a server and a worker are in ``test_cluster_e2e.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celery_ws import Publisher, Settings, SettingsError, TaskCancelled, UserConfirmation
from celery_ws.protocol import TaskStepResult, event
from celery_ws.testing import answer
from celery_ws.testing.redis_topologies import RedisClusterNodes
from tests.helpers import seconds

SECRET = "cluster-test-secret-of-at-least-32-bytes"
OWNERS = [f"owner-{n}" for n in range(24)]


@pytest.fixture
def settings(redis_cluster_url: str) -> Settings:
    return Settings.load(redis_url=redis_cluster_url, secret=SECRET, key_prefix="cwsstore")


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    publisher = Publisher(settings=settings)
    yield publisher
    publisher.close()


def test_open_mode_is_refused_on_a_cluster(redis_cluster_url: str) -> None:
    with pytest.raises(SettingsError, match="CELERY_WS_SECRET"):
        Settings.load(redis_url=redis_cluster_url)


def test_owners_spread_over_every_master_and_each_history_is_whole(
    publisher: Publisher, settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    for owner in OWNERS:
        publisher.emit_many(
            [
                event("task_progress", task_id=f"{owner}-t", user_id=owner, current=n, total=3)
                for n in range(3)
            ]
        )
    keys, holders = settings.keys, set()
    for owner in OWNERS:
        home = keys.home(owner)
        user_stream = publisher.redis.xrange(home.user_events(owner))
        task_stream = publisher.redis.xrange(home.task_events(f"{owner}-t"))
        assert [entry_id for entry_id, _ in user_stream] == [entry_id for entry_id, _ in task_stream]
        assert len(user_stream) == 3
        assert publisher.owner_of(f"{owner}-t") == owner  # by task id alone: the owner pointer
        holders.add(_node(publisher, settings, owner))
    assert holders == {master.port for master in redis_cluster.masters()}


def _node(publisher: Publisher, settings: Settings, owner: str) -> int:
    """The port of the master that holds ``owner``'s home."""
    return int(publisher.redis.get_node_from_key(settings.keys.home(owner).none).port)


def _ask_in_thread(publisher: Publisher, owner: str, task_id: str, **options: Any) -> dict[str, Any]:
    """``notify_user`` blocking in a thread, as a worker's ``confirm_step()`` does."""
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            outcome["answer"] = publisher.notify_user(
                TaskStepResult(step="check", message="go on?", status="waiting"),
                owner,
                task_id,
                timeout=seconds(30),
                **options,
            )
        except Exception as exc:  # the test reads it
            outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=ask)
    outcome["thread"].start()
    return outcome


def test_a_question_is_answered_by_an_assignee_of_another_home(
    publisher: Publisher, settings: Settings
) -> None:
    owner = OWNERS[0]
    other = next(o for o in OWNERS if _node(publisher, settings, o) != _node(publisher, settings, owner))
    waiting = _ask_in_thread(publisher, owner, f"{owner}-q", assignees=[owner, other])
    given = answer(f"{owner}-q", True, feedback="from elsewhere", by=other, settings=settings)
    waiting["thread"].join(seconds(10))
    got: UserConfirmation = waiting["answer"]
    assert (got.proceed, got.feedback, got.answered_by) == (True, "from elsewhere", other)
    assert given.callback_id == got.callback_id
    assert settings.keys.callback_home(got.callback_id) == settings.keys.home(owner)


def test_a_cancel_by_task_id_alone_reaches_a_waiting_question(
    publisher: Publisher, settings: Settings
) -> None:
    owner = OWNERS[1]
    task_id = f"{owner}-c"
    waiting = _ask_in_thread(publisher, owner, task_id)
    home = settings.keys.home(owner)
    for _ in range(200):  # asked: the task has its question indexed
        if publisher.redis.zcard(home.task_pending(task_id)):
            break
        threading.Event().wait(0.05)
    elsewhere = Publisher(settings=settings)  # as another process: it knows only the task id
    try:
        assert elsewhere.cancel(task_id, by="admin").outcome == "ok"
    finally:
        elsewhere.close()
    waiting["thread"].join(seconds(10))
    assert isinstance(waiting.get("error"), TaskCancelled)
    assert publisher.cancelled_by(task_id) == "admin"


def test_storing_events_asks_no_node_which_arguments_are_keys(
    publisher: Publisher, redis_cluster: RedisClusterNodes
) -> None:
    """Scripts are routed by their declared keys: a ``COMMAND GETKEYS`` per
    script call would be a round trip per event (redis-py's default)."""

    def getkeys_calls() -> int:
        return sum(
            int(node.client().info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
            for node in redis_cluster.masters()
        )

    before = getkeys_calls()
    publisher.emit_many(
        [event("task_progress", task_id=f"{o}-g", user_id=o, current=1, total=2) for o in OWNERS]
    )
    assert publisher.owner_of(f"{OWNERS[0]}-g") == OWNERS[0]
    assert getkeys_calls() == before
