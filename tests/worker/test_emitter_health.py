"""The emitter's trouble reaches the worker's log: the events it drops (its
buffer full while Redis is away) and its Redis errors, in one WARNING at most
once per report interval, with counts that add up to what happened. A real
emitter writes to a real Redis that is stopped and started again."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import pairwise

import pytest
import redis

from celery_ws.protocol import event
from celery_ws.settings import Settings
from celery_ws.testing.redis_server import RedisServer
from celery_ws.worker.emitter import Emitter
from tests.helpers import seconds

LOGGER = "celery_ws.worker.emitter"
INTERVAL = 1.0  # the behaviour under test: not scaled
BUFFER = 10
#: more than a batch the writer may hold (500) and the buffer: some must be dropped
SENT = 600
_COUNTS = re.compile(
    r"since the last report: (\d+) dropped .*, (\d+) Redis errors .*; "
    r"since the start: (\d+) dropped, (\d+) Redis errors"
)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(persistent=True) as server:  # its own Redis, to stop; keeps what it stored
        yield server


def _reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _counts(record: logging.LogRecord) -> tuple[int, ...]:
    found = _COUNTS.search(record.getMessage())
    assert found, record.getMessage()
    return tuple(int(n) for n in found.groups())


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_an_outage_and_a_full_buffer_are_reported_once_per_interval(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    settings = Settings.load(redis_url=redis_server.url, emit_buffer=BUFFER)
    emitter = Emitter(settings, report_interval=INTERVAL)
    task_id = f"t-{uuid.uuid4().hex}"

    def send(n: int) -> None:
        emitter.emit(event("note", task_id=task_id, user_id="u1", n=n))

    send(0)
    assert emitter.flush(seconds(10))
    assert _reports(caplog) == []  # nothing went wrong, nothing is said

    redis_server.stop()
    for n in range(1, SENT + 1):
        send(n)
    # the writer holds a batch and retries it; the buffer takes BUFFER more, the rest is dropped
    assert _until(lambda: emitter.redis_errors >= 1, seconds(10))
    time.sleep(2.5 * INTERVAL)  # the outage goes on: every retry fails
    redis_server.start()
    assert emitter.flush(seconds(10))

    def all_reported() -> bool:
        reports = _reports(caplog)
        return bool(reports) and _counts(reports[-1])[2:] == (emitter.dropped, emitter.redis_errors)

    assert _until(all_reported, INTERVAL + seconds(5))
    time.sleep(1.5 * INTERVAL)  # a quiet emitter says nothing more
    reports = _reports(caplog)
    assert all_reported(), [r.getMessage() for r in reports]

    assert len(reports) >= 2  # the outage outlasted an interval
    times = [record.created for record in reports]
    assert min(b - a for a, b in pairwise(times)) >= 0.9 * INTERVAL
    counts = [_counts(record) for record in reports]
    assert sum(c[0] for c in counts) == emitter.dropped
    assert sum(c[1] for c in counts) == emitter.redis_errors >= 2
    # what was not dropped was stored, once: the batch held across the outage and the buffer
    stored = redis.Redis.from_url(redis_server.url).xlen(settings.keys.home("u1").task_events(task_id))
    assert stored + emitter.dropped == SENT + 1
    assert emitter.dropped >= SENT - BUFFER - 500
