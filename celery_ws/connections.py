# redis-py leaves its Sentinel and cluster constructors and parse_url unannotated
# mypy: disable-error-code="no-untyped-call"
"""Redis clients configured for how celery-ws uses them, for the three
topologies a URL can name (``redis_urls.py``): one Redis, a Redis Cluster, or
the master Sentinel names.

redis-py 8 gives every client a 5 s socket timeout, which turns a blocking read
(``BLPOP`` while a task waits for its person, ``XREAD BLOCK`` in the server) into
a spurious TimeoutError; ``blocking=True`` clients have no socket timeout and
rely on TCP keepalive instead. Clients keep raw bytes: events pass through
the server without being decoded.

Sentinel: after ``SENTINEL FAILOVER`` the old master keeps accepting writes
for about ten seconds, until the sentinels turn it into a replica (and close
its clients); what is written there meanwhile is lost when it resyncs from the
new master. redis-py's Sentinel client asks the sentinels for the master only
when it opens a connection, so every open connection (the server's event
reader, a pooled one, a task's ``BLPOP``) would stay on the old master until
then. celery-ws' Sentinel connections ask again at most once a second, before
they send a command; when the master has moved, the connection closes without
sending and raises ConnectionError, which the client's retry (or the server's
reader loop) answers by connecting to the new master. A connection blocked
in ``BLPOP`` sends nothing, so a Sentinel client's ``BLPOP`` waits in slices of
a second, each one checked.

While no master answers (a dead master, until the sentinels promote its
replica), a Sentinel connection keeps trying to connect for up to
``FAILOVER_PATIENCE`` seconds counted from the first failure of any
connection of its pool, then fails at once until a master answers again.
The patience sits in ``connect()`` because redis-py reconnects a pooled
connection whose server died when it hands it out, outside the command's
retry: a count of command retries alone gave a write that came after an idle
spell only a few seconds. Cluster clients retry about 20 s per command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeAlias, cast

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis._parsers.commands import CommandPolicies, PolicyRecords, RequestPolicy, ResponsePolicy
from redis.asyncio.connection import parse_url as async_parse_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import EqualJitterBackoff, ExponentialWithJitterBackoff
from redis.commands.policies import (
    AsyncBasePolicyResolver,
    AsyncPolicyResolver,
    AsyncStaticPolicyResolver,
    BasePolicyResolver,
    PolicyResolver,
    StaticPolicyResolver,
)
from redis.connection import parse_url
from redis.retry import Retry

from .pipelines import StreamedPipeline
from .redis_urls import RedisTarget, parse_redis_url

__all__ = [
    "ASYNC_POOL_SIZE",
    "FAILOVER_PATIENCE",
    "AsyncRedis",
    "SyncRedis",
    "async_client",
    "sync_client",
]

logger = logging.getLogger(__name__)

#: what ``sync_client``/``async_client`` give, by the URL's scheme. They are
#: annotated as returning the standalone class until every caller handles a
#: cluster client (which has the same commands, different pipelines and scripts)
SyncRedis: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedis: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

RetryClass: TypeAlias = "type[Retry] | type[AsyncRetry]"

#: a server's Redis connections (per node for a cluster); requests beyond wait
#: for a free one instead of failing (a burst of subscribes would otherwise hit
#: "Too many connections"); redis-py's cluster client cannot wait, it keeps its default
ASYNC_POOL_SIZE = 64
_POOL_WAIT = 10.0
#: how often an open Sentinel connection checks that its server is still the master
MASTER_CHECK_INTERVAL = 1.0
#: how long Sentinel connections keep trying while no master answers: the
#: sentinels' down-after time plus an election, with room for a loaded host
FAILOVER_PATIENCE = 20.0
_RECONNECT_BACKOFF = EqualJitterBackoff(base=0.05, cap=1.0)
_SENTINEL_TIMEOUT = 2.0


def _options(blocking: bool, target: RedisTarget, retry_class: RetryClass) -> dict[str, Any]:
    """Options of every server connection. ``retry_class`` is redis-py's sync
    or asyncio ``Retry``: an asyncio client given the sync one never retries."""
    if target.kind in ("standalone", "sentinel"):
        # back within a second, or down for longer (Sentinel's wait for a new
        # master is in its connections' connect())
        retry = retry_class(ExponentialWithJitterBackoff(base=0.01, cap=0.5), 3)
    else:  # a cluster failover takes seconds: 4.6 to 9.2 s of retries, each reconnecting
        retry = retry_class(EqualJitterBackoff(base=0.05, cap=2.0), 9)
    return {
        "socket_timeout": None if blocking else 5.0,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": retry,
    }


class _PackedByHiredis:
    """Commands packed by hiredis alone. redis-py checks every argument in
    Python before handing the command to hiredis (for bytearray and memoryview
    values, which celery-ws never sends): for an event's script call of about
    25 arguments that check cost three times hiredis' packing, and was the
    largest share of a publisher's time per event. Only the first argument is
    looked at, for a command name of two words (``CLIENT SETNAME``), which
    redis-py splits too."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return [hiredis.pack_command(_split_name(args))]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join([hiredis.pack_command(_split_name(tuple(args))) for args in commands])]


def _split_name(args: tuple[Any, ...]) -> tuple[Any, ...]:
    name = args[0]
    if isinstance(name, str) and " " in name:
        return (*name.split(), *args[1:])
    if isinstance(name, bytes) and b" " in name:
        return (*name.split(), *args[1:])
    return tuple(args)


class _WrittenInPlace:
    """Commands written by the coroutine that sends them. With a socket
    timeout (every client but the blocking ones has one), redis-py bounds each
    write with ``asyncio.wait_for()``, which on Python 3.11 runs the write as a
    Task of its own: a turn of the event loop before the command leaves (0.1 ms
    on a server's busy loop), on the path of every answer a person gives.
    ``asyncio.timeout()`` bounds the same write in place (3.12's ``wait_for()``
    is built on it); connecting and the health check stay redis-py's."""

    socket_timeout: float | None
    is_connected: bool
    _writer: asyncio.StreamWriter | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.socket_timeout and self.is_connected and check_health:
            await self.check_health()  # type: ignore[attr-defined]
        writer = self._writer
        if not self.socket_timeout or writer is None or not self.is_connected:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(self.socket_timeout):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:  # before OSError, of which it is one
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise redis.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise redis.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:  # cancelled mid-write: what was sent of the command is unknown
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


class _Connection(_PackedByHiredis, redis.connection.Connection):
    pass


class _SSLConnection(_PackedByHiredis, redis.connection.SSLConnection):
    pass


class _UnixConnection(_PackedByHiredis, redis.connection.UnixDomainSocketConnection):
    pass


#: redis-py's connection class for a URL's scheme -> the same, packed by hiredis
_PACKED_BY_HIREDIS: dict[type[Any], type[Any]] = {
    redis.connection.Connection: _Connection,
    redis.connection.SSLConnection: _SSLConnection,
    redis.connection.UnixDomainSocketConnection: _UnixConnection,
}


class _AsyncConnection(_WrittenInPlace, _PackedByHiredis, redis.asyncio.connection.Connection):
    pass


class _AsyncSSLConnection(_WrittenInPlace, _PackedByHiredis, redis.asyncio.connection.SSLConnection):
    pass


class _AsyncUnixConnection(
    _WrittenInPlace, _PackedByHiredis, redis.asyncio.connection.UnixDomainSocketConnection
):
    pass


#: the same for the asyncio clients, written in place too
_ASYNC_CONNECTIONS: dict[type[Any], type[Any]] = {
    redis.asyncio.connection.Connection: _AsyncConnection,
    redis.asyncio.connection.SSLConnection: _AsyncSSLConnection,
    redis.asyncio.connection.UnixDomainSocketConnection: _AsyncUnixConnection,
}


class _Streaming:
    """A client whose pipelines without a transaction stream (``pipelines.py``)."""

    connection_pool: Any
    response_callbacks: Any

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        if transaction:
            return super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        return StreamedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _Redis(_Streaming, redis.Redis):
    pass


def sync_client(url: str, *, blocking: bool = False) -> redis.Redis:
    """A client for ``url``: ``redis.Redis`` (one server, or the master Sentinel
    names) or ``redis.cluster.RedisCluster``.

    Raises:
        SettingsError: ``url`` is malformed (the message names the part).
    """
    target = parse_redis_url(url)
    options = _options(blocking, target, Retry)
    if target.kind == "standalone":
        scheme_class = parse_url(url).get("connection_class", redis.connection.Connection)
        return _Redis.from_url(url, connection_class=_PACKED_BY_HIREDIS[scheme_class], **options)
    server = _server_options(target)
    if target.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in target.hosts]
        cluster = _SyncCluster(startup_nodes=nodes, policy_resolver=_ScriptsByKey(), **server, **options)
        return cast("redis.Redis", cluster)
    sentinel = redis.sentinel.Sentinel(target.hosts, sentinel_kwargs=_sentinel_options(target, Retry))
    assert target.service is not None  # noqa: S101 (parse_redis_url guarantees it)
    client: redis.Redis = sentinel.master_for(
        target.service,
        redis_class=_SyncSentinelRedis,
        connection_pool_class=_SyncSentinelPool,
        **server,
        **options,
    )
    return client


def async_client(url: str, *, blocking: bool = False) -> redis.asyncio.Redis:
    """The asyncio twin of :func:`sync_client`."""
    target = parse_redis_url(url)
    options = _options(blocking, target, AsyncRetry)
    if target.kind == "standalone":
        scheme_class = async_parse_url(url).get("connection_class", redis.asyncio.connection.Connection)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=ASYNC_POOL_SIZE,
            timeout=_POOL_WAIT,
            connection_class=_ASYNC_CONNECTIONS[scheme_class],
            **options,
        )
        return redis.asyncio.Redis(connection_pool=pool)
    server = _server_options(target)
    if target.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in target.hosts]
        cluster = redis.asyncio.cluster.RedisCluster(
            startup_nodes=nodes, policy_resolver=_AsyncScriptsByKey(), **server, **options
        )
        return cast("redis.asyncio.Redis", cluster)
    sentinel = redis.asyncio.sentinel.Sentinel(
        target.hosts, sentinel_kwargs=_sentinel_options(target, AsyncRetry)
    )
    assert target.service is not None  # noqa: S101
    client: redis.asyncio.Redis = sentinel.master_for(
        target.service,
        redis_class=_AsyncSentinelRedis,
        connection_pool_class=_AsyncSentinelPool,
        max_connections=ASYNC_POOL_SIZE,
        timeout=_POOL_WAIT,
        **server,
        **options,
    )
    return client


#: scripts go to the node of their declared keys. Without a policy, redis-py 8's
#: cluster clients ask the server which arguments of each EVALSHA are keys
#: (``COMMAND GETKEYS``): a round trip per script call, which cut the events
#: stored per second to a quarter.
_SCRIPTS: PolicyRecords = {
    "core": {
        name: CommandPolicies(RequestPolicy.DEFAULT_KEYED, ResponsePolicy.DEFAULT_KEYED)
        for name in ("eval", "evalsha", "eval_ro", "evalsha_ro")
    }
}


class _ScriptsByKey(BasePolicyResolver):
    def __init__(self, fallback: PolicyResolver | None = None) -> None:
        super().__init__(_SCRIPTS, fallback or StaticPolicyResolver())

    def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
        return _ScriptsByKey(fallback)


class _SyncCluster(redis.cluster.RedisCluster):
    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        # redis-py 8 builds the pipeline with the default resolver, not the client's
        pipe = super().pipeline(transaction, shard_hint)
        pipe._policy_resolver = self._policy_resolver
        return pipe


class _AsyncScriptsByKey(AsyncBasePolicyResolver):
    def __init__(self, fallback: AsyncPolicyResolver | None = None) -> None:
        super().__init__(_SCRIPTS, fallback or AsyncStaticPolicyResolver())

    def with_fallback(self, fallback: AsyncPolicyResolver) -> AsyncPolicyResolver:
        return _AsyncScriptsByKey(fallback)


def _server_options(target: RedisTarget) -> dict[str, Any]:
    """Credentials, database, TLS and query options of the URL, for every
    server connection (the address comes from the cluster or the sentinels)."""
    options: dict[str, Any] = parse_url(target.server_url)
    for name in ("host", "port", "path", "connection_class"):
        options.pop(name, None)
    if target.kind == "cluster":
        options.pop("db", None)
    if target.tls:
        options["ssl"] = True
    return options


def _sentinel_options(target: RedisTarget, retry_class: RetryClass) -> dict[str, Any]:
    """How to reach the sentinels themselves: short timeouts (asking them must
    never hang a command), the URL's TLS, their own password if given."""
    return {
        "socket_timeout": _SENTINEL_TIMEOUT,
        "socket_connect_timeout": _SENTINEL_TIMEOUT,
        "retry": retry_class(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1),
        **({"ssl": True} if target.tls else {}),
        **({"password": target.sentinel_password} if target.sentinel_password else {}),
    }


class _MasterWatch:
    """What a pool's connections share about the master: when they last asked
    the sentinels for it, and since when none of them could reach one."""

    def __init__(self) -> None:
        self.checked_at = time.monotonic()
        self.lost_at: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at < MASTER_CHECK_INTERVAL:
            return False
        self.checked_at = now
        return True

    def reached(self) -> None:
        self.lost_at = None

    def pause(self, attempt: int) -> float | None:
        """Seconds to wait before connecting again after ``attempt`` failures in
        a row, or None once no master has answered for ``FAILOVER_PATIENCE``."""
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at = now
        left = self.lost_at + FAILOVER_PATIENCE - now
        return None if left <= 0 else min(left, _RECONNECT_BACKOFF.compute(attempt))


def _moved(address: Any, host: str, port: int) -> bool:
    return address is not None and (str(address[0]), int(address[1])) != (host, int(port))


class _SyncMasterConnection(_PackedByHiredis, redis.sentinel.SentinelManagedConnection):
    """A Sentinel connection that leaves a master that is no longer one: before
    sending, it compares its server with the master its pool last learned of
    (asking the sentinels when the pool has not for a second), so a connection
    that was busy when the pool learned of a new master leaves too."""

    def __init__(self, **kwargs: Any) -> None:
        self._watch: _MasterWatch = kwargs.pop("master_watch")
        super().__init__(**kwargs)

    def connect(self) -> None:
        attempt = 0
        while True:
            try:
                self._connect_retry()
            except (redis.ConnectionError, redis.TimeoutError):
                attempt += 1
                pause = self._watch.pause(attempt)
                if pause is None:
                    raise
                time.sleep(pause)
            else:
                self._watch.reached()
                return

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is not None and self.connection_pool.is_master:
            address = self.connection_pool.master_address
            if self._watch.due():
                try:
                    address = self.connection_pool.get_master_address()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    logger.debug("sentinels unreachable (%s); staying on %s:%s", exc, self.host, self.port)
            if _moved(address, self.host, self.port):
                self.disconnect()
                raise redis.ConnectionError(f"the master moved to {address[0]}:{address[1]}")
        super().send_packed_command(command, check_health)


class _SyncMasterSSLConnection(_SyncMasterConnection, redis.connection.SSLConnection):
    pass


class _SyncSentinelPool(redis.sentinel.SentinelConnectionPool):
    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        tls = kwargs.pop("ssl", False)
        kwargs["connection_class"] = _SyncMasterSSLConnection if tls else _SyncMasterConnection
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.connection_kwargs["master_watch"] = _MasterWatch()


class _AsyncMasterConnection(
    _WrittenInPlace, _PackedByHiredis, redis.asyncio.sentinel.SentinelManagedConnection
):
    """The asyncio twin of ``_SyncMasterConnection``."""

    def __init__(self, **kwargs: Any) -> None:
        self._watch: _MasterWatch = kwargs.pop("master_watch")
        super().__init__(**kwargs)

    async def connect(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_retry()
            except (redis.ConnectionError, redis.TimeoutError):
                attempt += 1
                pause = self._watch.pause(attempt)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
            else:
                self._watch.reached()
                return

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.is_connected and self.connection_pool.is_master:
            address = self.connection_pool.master_address
            if self._watch.due():
                try:
                    address = await self.connection_pool.get_master_address()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    logger.debug("sentinels unreachable (%s); staying on %s:%s", exc, self.host, self.port)
            if _moved(address, self.host, self.port):
                await self.disconnect()
                raise redis.ConnectionError(f"the master moved to {address[0]}:{address[1]}")
        await super().send_packed_command(command, check_health)


class _AsyncMasterSSLConnection(_AsyncMasterConnection, redis.asyncio.connection.SSLConnection):
    pass


class _AsyncSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool,
    redis.asyncio.BlockingConnectionPool,
):
    """A Sentinel pool that waits for a free connection, as the standalone one does."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        tls = kwargs.pop("ssl", False)
        kwargs["connection_class"] = _AsyncMasterSSLConnection if tls else _AsyncMasterConnection
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.connection_kwargs["master_watch"] = _MasterWatch()


def _slices(timeout: float | None) -> Iterator[float]:
    """Lengths of the BLPOPs that make one of ``timeout`` seconds (0 or None:
    forever), none longer than ``MASTER_CHECK_INTERVAL``."""
    deadline = time.monotonic() + timeout if timeout else None
    while deadline is None or (left := deadline - time.monotonic()) > 0:
        yield MASTER_CHECK_INTERVAL if deadline is None else max(min(left, MASTER_CHECK_INTERVAL), 0.01)


class _SyncSentinelRedis(_Streaming, redis.Redis):
    """A Sentinel client whose ``BLPOP`` follows the master while it waits."""

    def blpop(self, keys: Any, timeout: float | None = 0) -> Any:
        for part in _slices(timeout):
            reply = super().blpop(keys, part)
            if reply is not None:
                return reply
        return None


class _AsyncSentinelRedis(redis.asyncio.Redis):
    """The asyncio twin of ``_SyncSentinelRedis``."""

    async def blpop(self, keys: Any, timeout: float | None = 0) -> Any:
        for part in _slices(timeout):
            reply = await super().blpop(keys, part)
            if reply is not None:
                return reply
        return None
