"""``redis+cluster://`` gives cluster clients (sync and asyncio) that read and
write keys of every slot and speak sharded pub/sub, on a real three-master
cluster; the end-to-end tests of celery-ws on a cluster build on this."""

from __future__ import annotations

import asyncio

import redis.asyncio.cluster
import redis.cluster

from celery_ws.connections import async_client, sync_client
from celery_ws.testing.redis_topologies import RedisClusterNodes
from tests.helpers import seconds

#: keys whose slots fall on each of the three masters (a cluster has 16,384 slots)
KEYS = [f"cws-test:{{{n}}}:k" for n in range(30)]


def test_sync_client_writes_and_reads_keys_on_every_master(redis_cluster: RedisClusterNodes) -> None:
    client = sync_client(redis_cluster.url)
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        for n, key in enumerate(KEYS):
            client.set(key, n)
        assert [client.get(key) for key in KEYS] == [str(n).encode() for n in range(len(KEYS))]
        holders = {client.get_node_from_key(key).port for key in KEYS}
        assert holders == {master.port for master in redis_cluster.masters()}
    finally:
        client.close()


def test_sync_client_publishes_and_subscribes_by_shard(redis_cluster: RedisClusterNodes) -> None:
    client = sync_client(redis_cluster.url)
    blocking = sync_client(redis_cluster.url, blocking=True)
    pubsub = blocking.pubsub()  # type: ignore[no-untyped-call]
    channels = ["cws-test:{a}:live", "cws-test:{b}:live", "cws-test:{c}:live"]
    try:
        for channel in channels:
            pubsub.ssubscribe(channel)
        for channel in channels:
            assert client.spublish(channel, f"to {channel}") == 1
        got = []
        for _ in range(50):
            message = pubsub.get_sharded_message(timeout=seconds(1))
            if message and message["type"] == "smessage":
                got.append((message["channel"].decode(), message["data"].decode()))
            if len(got) == len(channels):
                break
        assert sorted(got) == sorted((c, f"to {c}") for c in channels)
    finally:
        pubsub.close()
        blocking.close()
        client.close()


async def test_async_client_reads_writes_and_subscribes(redis_cluster: RedisClusterNodes) -> None:
    client = async_client(redis_cluster.url)
    blocking = async_client(redis_cluster.url, blocking=True)
    try:
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        for n, key in enumerate(KEYS):
            await client.set(key, f"async {n}")
        assert await asyncio.gather(*(client.get(key) for key in KEYS)) == [
            f"async {n}".encode() for n in range(len(KEYS))
        ]
        await (
            blocking.initialize()
        )  # an asyncio cluster client learns its slots on first use; pubsub() needs them
        pubsub = blocking.pubsub()
        channels = ["cws-test:{x}:live", "cws-test:{y}:live", "cws-test:{z}:live"]
        await pubsub.ssubscribe(*channels)
        for channel in channels:
            assert await client.spublish(channel, f"to {channel}") == 1
        got = []
        async with asyncio.timeout(seconds(10)):
            while len(got) < len(channels):
                message = await pubsub.get_sharded_message(timeout=seconds(1))
                if message and message["type"] == "smessage":
                    got.append((message["channel"].decode(), message["data"].decode()))
        assert sorted(got) == sorted((c, f"to {c}") for c in channels)
        await pubsub.aclose()
    finally:
        await blocking.aclose()
        await client.aclose()
