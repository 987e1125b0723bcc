"""A Redis Cluster and a Sentinel group for the whole session, from the Redis 7
``redis-server`` on PATH or in /usr/bin (``celery_ws.testing.redis_topologies``).

A test that kills a node or forces a failover leaves the topology working
(a new master serves), but not as it found it: ``failover()`` and
``kill_master()`` wait for a healthy group before they act, and a killed node
stays down until the test calls ``restart(node)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_ws.testing.redis_topologies import RedisClusterNodes, SentinelGroup


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """Three masters with one replica each (six nodes), cluster state ok."""
    with RedisClusterNodes(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterNodes) -> str:
    """``redis+cluster://`` naming every node of ``redis_cluster``."""
    return redis_cluster.url


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """One master, one replica, three sentinels watching ``mymaster``."""
    with SentinelGroup() as group:
        yield group


@pytest.fixture(scope="session")
def sentinel_url(sentinel_group: SentinelGroup) -> str:
    """``redis+sentinel://`` naming the three sentinels, ``mymaster``, db 0."""
    return sentinel_group.url
