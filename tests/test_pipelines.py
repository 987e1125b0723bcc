"""Batches stream: a long pipeline without a transaction is sent while it is
filled, so Redis runs its first commands before the caller has queued the
last; what the caller gets back is what redis-py's pipeline gives."""

from __future__ import annotations

import uuid

import pytest
import redis

from celery_ws.connections import sync_client
from celery_ws.pipelines import STREAM_CHUNK

N = 3 * STREAM_CHUNK + 5  # several chunks and a remainder


@pytest.fixture
def clients(celery_ws_redis_url: str):
    client, other = sync_client(celery_ws_redis_url), redis.Redis.from_url(celery_ws_redis_url)
    yield client, other
    client.close()
    other.close()


@pytest.fixture
def k() -> str:
    """A key prefix no other test uses."""
    return f"pipelines-{uuid.uuid4().hex[:8]}:"


def test_a_long_batch_runs_while_it_is_queued_and_replies_in_order(clients, k):
    client, other = clients
    with client.pipeline(transaction=False) as pipe:
        for i in range(N):
            pipe.set(f"{k}{i}", i)
            pipe.get(f"{k}{i}")
        # the first chunks have run: another client sees their writes before execute()
        assert other.get(f"{k}0") == b"0"
        replies = pipe.execute()
    assert replies == [value for i in range(N) for value in (True, str(i).encode())]
    # the pipeline is ready for another batch, short this time (sent by redis-py's execute)
    with client.pipeline(transaction=False) as pipe:
        pipe.get(f"{k}{N - 1}")
        assert pipe.execute() == [str(N - 1).encode()]


def test_an_error_reply_is_in_its_place_or_raised(clients, k):
    client, other = clients
    other.rpush(f"{k}list", "x")
    for raise_on_error in (False, True):
        with client.pipeline(transaction=False) as pipe:
            for i in range(N):
                pipe.incr(f"{k}list" if i == STREAM_CHUNK + 1 else f"{k}n{i}")
            if raise_on_error:
                with pytest.raises(redis.ResponseError, match=f"Command # {STREAM_CHUNK + 2}"):
                    pipe.execute()
            else:
                replies = pipe.execute(raise_on_error=False)
                assert isinstance(replies[STREAM_CHUNK + 1], redis.ResponseError)
                assert replies[: STREAM_CHUNK + 1] == [1] * (STREAM_CHUNK + 1)
    assert other.get(f"{k}n0") == b"2"  # each batch ran once


def test_a_connection_lost_while_streaming_sends_the_batch_again(clients, k):
    client, other = clients
    with client.pipeline(transaction=False) as pipe:
        for i in range(STREAM_CHUNK):
            pipe.set(f"{k}{i}", i)
        host, port = pipe.connection._sock.getsockname()[:2]  # the connection that streams
        other.client_kill(f"{host}:{port}")
        for i in range(STREAM_CHUNK, N):
            pipe.set(f"{k}{i}", i)
        assert pipe.execute() == [True] * N
    assert other.mget([f"{k}{i}" for i in range(N)]) == [str(i).encode() for i in range(N)]


def test_a_transaction_is_sent_whole(clients, k):
    client, other = clients
    with client.pipeline(transaction=True) as pipe:
        for i in range(N):
            pipe.set(f"{k}t{i}", i)
        assert other.get(f"{k}t0") is None
        assert pipe.execute() == [True] * N
    assert other.get(f"{k}t0") == b"0"
