"""The deployment files: no Docker engine runs here, so check what can be
checked without one. docker-compose.yml parses (with PyYAML, when installed)
and has the services the README describes; deploy/nginx.conf passes
``nginx -t`` with its upstream hosts replaced by loopback addresses; the
commands both files run are ones the CLI accepts. The same nginx
configuration carries real traffic in tests/e2e/test_scale_out.py."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from celery_ws.cli import ws
from celery_ws.testing.redis_server import free_port
from tests.helpers import seconds
from tests.nginx import find_nginx, nginx_command, write_nginx_conf
from tests.processes import REPO

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx.conf"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


def exec_form(arguments: str) -> list[str]:
    """A JSON exec form (``["a", "b"]``) as a list."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def assert_cli_accepts(argv: list[str]) -> None:
    """``celery-ws serve ...`` parses with the real click command (nothing runs)."""
    assert argv[:2] == ["celery-ws", "serve"], argv
    ws.commands["serve"].make_context("serve", argv[2:])


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)
    assert instructions[0] == ("FROM", "python:3.12-slim")
    assert any("pip install ." in run for run in by_name["RUN"])
    user = by_name["USER"][-1]
    assert user not in ("root", "0"), "the image must not run as root"
    assert [name for name, _ in instructions].index("USER") > max(
        i for i, (name, rest) in enumerate(instructions) if name == "RUN"
    )
    assert by_name["EXPOSE"] == ["8765"]

    (healthcheck,) = by_name["HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2]
    assert "urllib" in argv[2]
    ast.parse(argv[2])  # valid Python

    cmd = exec_form(by_name["CMD"][-1])
    assert cmd == ["celery-ws", "serve", "--host", "0.0.0.0"]
    assert_cli_accepts(cmd)


def test_compose_file_names_the_topology() -> None:
    """Without PyYAML: the services and the settings are there."""
    text = COMPOSE.read_text()
    for needle in (
        "redis:",
        "worker:",
        "celery-ws-1:",
        "celery-ws-2:",
        "nginx:",
        "CELERY_WS_SECRET",
        "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf",
        '"celery", "-A", "examples.tasks", "worker"',
    ):
        assert needle in text, needle


def test_compose_file_parses() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"redis", "worker", "celery-ws-1", "celery-ws-2", "nginx"}
    assert services["worker"]["command"][:4] == ["celery", "-A", "examples.tasks", "worker"]
    for name in ("celery-ws-1", "celery-ws-2"):
        replica = services[name]  # merged from the x-celery-ws anchor
        assert replica["command"][:5] == ["celery-ws", "serve", "--app", "examples.tasks:app", "--host"]
        assert_cli_accepts(replica["command"])
        assert "CELERY_WS_SECRET" in replica["environment"]
        assert replica["environment"]["CELERY_WS_REDIS_URL"] == "redis://redis:6379/0"
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    upstream = re.search(r"upstream\s+celery_ws\s*\{([^}]*)\}", NGINX_CONF.read_text())
    assert upstream is not None
    hosts = re.findall(r"server\s+([\w.-]+):8765;", upstream.group(1))
    assert sorted(hosts) == ["celery-ws-1", "celery-ws-2"], "nginx's upstream must name the compose services"


def test_nginx_conf_has_the_websocket_settings() -> None:
    text = NGINX_CONF.read_text()
    ws_block = re.search(r"location\s+/ws/\s*\{([^}]*)\}", text)
    assert ws_block is not None
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        'proxy_set_header Connection "upgrade";',
        "proxy_set_header X-Forwarded-For",
        "proxy_set_header X-Forwarded-Proto",
        "proxy_read_timeout 86400;",
        "proxy_send_timeout 86400;",
    ):
        assert directive in ws_block.group(1), directive
    assert re.search(r"location\s+=\s+/healthz\s*\{", text)
    assert re.search(r"location\s+=\s+/metrics\s*\{", text)


def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx); .ci/run installs it")
    conf = write_nginx_conf(tmp_path, [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], free_port())
    done = subprocess.run(
        nginx_command(nginx, tmp_path, conf, "-t"), capture_output=True, text=True, timeout=seconds(30)
    )
    assert done.returncode == 0, f"{shlex.join(nginx_command(nginx, tmp_path, conf, '-t'))}\n{done.stderr}"
    assert "test is successful" in done.stderr
