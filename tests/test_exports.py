"""The public API, and the wall between the worker side and the server side."""

from __future__ import annotations

import subprocess
import sys

import celery_ws


def test_every_public_name_resolves():
    for name in celery_ws.__all__:
        assert getattr(celery_ws, name) is not None, name
    assert set(celery_ws.__all__) == set(dir(celery_ws))


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_a_worker_never_loads_websockets_or_the_server():
    loaded = _modules_after("from celery_ws import CeleryWS, ProgressTask, confirm_step, Publisher")
    assert "websockets" not in loaded
    assert not {m for m in loaded if m.startswith("celery_ws.server")}


def test_the_server_never_loads_the_worker_side():
    loaded = _modules_after("from celery_ws import WebSocketManager")
    assert not {m for m in loaded if m.startswith("celery_ws.worker")}


def test_server_and_worker_sources_do_not_import_each_other():
    from pathlib import Path

    root = Path(celery_ws.__file__).parent
    for side, other in (("server", "worker"), ("worker", "server")):
        for path in (root / side).glob("*.py"):
            imports = [line for line in path.read_text().splitlines()
                       if line.lstrip().startswith(("from ", "import "))]
            assert not [line for line in imports if f"..{other}" in line or f"celery_ws.{other}" in line], path
