"""Real processes that tests start, stop, restart and kill: ``celery-ws serve``
and ``celery worker``. Their output goes to log files named in failures. Also
one-shot commands (``run``), such as ``celery-ws token``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery_ws.testing.redis_server import free_port
from tests.helpers import seconds

REPO = Path(__file__).resolve().parent.parent
_START_TIMEOUT = seconds(30)
_STOP_TIMEOUT = seconds(10)
_RUN_TIMEOUT = seconds(30)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = seconds(2)) -> tuple[int, bytes]:
    """Status and body; a 4xx/5xx answer is returned, not raised."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without the user's celery-ws settings, plus ``extra``;
    the suite's timeout factor stays, for the tasks a worker runs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_WS_", "WEBSOCKET_")) or k == "CELERY_WS_TEST_TIMEOUT_FACTOR"
    }
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **extra)
    return env


def celery_ws_command() -> list[str]:
    """The installed ``celery-ws`` script, or the module when not installed as a script."""
    script = Path(sys.executable).parent / "celery-ws"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "celery_ws"]


def run(args: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run a command to its end in the repository, without the user's celery-ws settings."""
    return subprocess.run(
        args, cwd=REPO, env=_clean_env(**extra_env), capture_output=True, text=True, timeout=_RUN_TIMEOUT
    )


def wait_until_ok(url: str, process: subprocess.Popen[bytes], timeout: float = _START_TIMEOUT) -> bool:
    """Whether ``url`` answered 200 before ``timeout``; False at once if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


class _Process:
    process: subprocess.Popen[bytes] | None = None
    log: Path

    def _spawn(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.starts = getattr(self, "starts", 0) + 1
        self.log = self.log_dir / f"{name}-{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if hasattr(self, "log") else ""

    def stop(self) -> None:
        """SIGTERM (a server closes its connections with 1001), then SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the whole process group: no goodbye, no cleanup."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_TIMEOUT)


class ServeProcess(_Process):
    """A celery-ws server on a fixed loopback port, restartable on that port;
    open mode unless ``env`` sets ``CELERY_WS_SECRET``.

    ``command`` is what runs it (``python -m celery_ws`` by default); ``serve
    --host --port`` and then ``args`` follow it.
    """

    def __init__(
        self,
        redis_url: str,
        log_dir: Path,
        port: int | None = None,
        *,
        env: dict[str, str] | None = None,
        app: str | None = None,
        command: Sequence[str] = (sys.executable, "-m", "celery_ws"),
        args: Sequence[str] = (),
    ) -> None:
        self.redis_url = redis_url
        self.env = env or {}
        self.port = port or free_port()
        self.log_dir = log_dir
        self.command = [*command]
        self.args = [*args, *(["--app", app] if app else [])]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        assert self.process is None, "already running"
        args = [*self.command, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self._spawn(args, _clean_env(CELERY_WS_REDIS_URL=self.redis_url, **self.env), f"serve-{self.port}")
        assert self.process is not None
        if wait_until_ok(f"{self.http_url}/readyz", self.process):
            return self
        self.stop()
        raise RuntimeError(f"celery-ws serve did not become ready:\n{self.logs()}")

    def status(self) -> dict[str, Any]:
        code, body = http_get(f"{self.http_url}/status")
        assert code == 200, body
        return json.loads(body)  # type: ignore[no-any-return]


class WorkerProcess(_Process):
    """``celery -A tests.prefork_app worker`` (prefork unless told) on its own queue."""

    def __init__(
        self,
        app: Any,
        redis_url: str,
        log_dir: Path,
        queue: str,
        *,
        broker_url: str | None = None,
        pool: str = "prefork",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.app = app  # the test's app, used to ping this worker
        self.redis_url = redis_url
        self.broker_url = broker_url or redis_url
        self.log_dir = log_dir
        self.queue = queue
        self.name = f"{queue}@localhost"
        self.pool = pool
        self.concurrency = concurrency
        self.env = env or {}

    def start(self) -> WorkerProcess:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.prefork_app",
            "worker",
            "-P",
            self.pool,
            "-c",
            str(self.concurrency),
            "-Q",
            self.queue,
            "-n",
            self.name,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ]
        env = _clean_env(CELERY_WS_REDIS_URL=self.redis_url, CELERY_BROKER_URL=self.broker_url, **self.env)
        self._spawn(args, env, f"worker-{self.queue}")
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.app.control.ping(destination=[self.name], timeout=0.5):
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start:\n{self.logs()}")
        return self

    def children(self) -> list[int]:
        """PIDs of the prefork pool's children."""
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]
