"""A real nginx in front of celery-ws replicas, run from ``deploy/nginx.conf``
with its upstreams, port and files moved into a temporary prefix."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from celery_ws.testing.redis_server import free_port
from tests.helpers import seconds
from tests.processes import REPO, wait_until_ok

__all__ = ["Nginx", "find_nginx", "nginx_command", "write_nginx_conf"]

NGINX_TEMPLATE = REPO / "deploy" / "nginx.conf"
_STOP_TIMEOUT = seconds(10)


def find_nginx() -> str | None:
    configured = os.environ.get("CELERY_WS_TEST_NGINX")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def render_nginx_site(template: str, upstreams: Sequence[str], listen: str, access_log: Path) -> str:
    """``deploy/nginx.conf`` with its upstream servers, listen address and log path replaced."""
    servers = "".join(f"    server {address};\n" for address in upstreams)
    site, found = re.subn(
        r"upstream\s+celery_ws\s*\{[^}]*\}", lambda _: f"upstream celery_ws {{\n{servers}}}", template
    )
    assert found == 1, "deploy/nginx.conf: expected one 'upstream celery_ws { ... }' block"
    site, found = re.subn(r"(?m)^(\s*)listen\s+[^;]+;", lambda m: f"{m.group(1)}listen {listen};", site)
    assert found == 1, "deploy/nginx.conf: expected one 'listen' line"
    return re.sub(r"(?m)^(\s*access_log\s+)\S+", lambda m: f"{m.group(1)}{access_log}", site)


def render_nginx_main(prefix: Path, site: Path) -> str:
    """A whole nginx.conf that keeps every file inside ``prefix`` and includes ``site``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # root's tmp dirs are 0700: workers need them
    return f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def write_nginx_conf(prefix: Path, upstreams: Sequence[str], port: int) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "celery-ws.conf"
    site.write_text(
        render_nginx_site(NGINX_TEMPLATE.read_text(), upstreams, f"127.0.0.1:{port}", prefix / "access.log")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_main(prefix, site))
    return conf


def nginx_command(nginx: str, prefix: Path, conf: Path, *extra: str) -> list[str]:
    return [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), *extra]


class Nginx:
    def __init__(self, nginx: str, prefix: Path, upstreams: Sequence[str]) -> None:
        self.port = free_port()
        self.prefix = prefix
        self.conf = write_nginx_conf(prefix, upstreams, self.port)
        self.command = nginx_command(nginx, prefix, self.conf)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        log = self.prefix / "stdout.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        if wait_until_ok(f"{self.http_url}/healthz", self.process):
            return self
        error_log = self.prefix / "error.log"
        self.stop()
        raise RuntimeError(
            f"nginx did not start:\n{error_log.read_text()[-3000:] if error_log.exists() else ''}"
        )

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)
