"""The public API, and the wall between the worker side and the server side.

What websockets' and httpx's export tests check: the top-level ``__all__`` is
sorted and every name in it resolves, lazily, to the object its home module
defines; every public module's ``__all__`` names things that exist; every
exception sits under one root. Imports that must stay out of a process are
checked in a fresh interpreter, since this one has loaded everything.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import celery_ws
from celery_ws import exceptions

ROOT = Path(celery_ws.__file__).parent


def _isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then everything else."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def _public_modules() -> list[ModuleType]:
    """Every module a user may import: no ``_private`` part, no ``__main__``."""
    modules = [celery_ws]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="celery_ws."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the old paths kept for one release
            modules.append(importlib.import_module(info.name))
    return modules


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


# -- the top level ---------------------------------------------------------------------------


def test_all_is_sorted():
    assert celery_ws.__all__ == sorted(celery_ws.__all__, key=_isort_order)


def test_the_lazy_table_and_the_type_checking_imports_name_the_same_homes():
    """``_LAZY`` drives runtime lookups, the ``TYPE_CHECKING`` block what a type
    checker sees: a name added to one only would resolve for one of them."""
    tree = ast.parse((ROOT / "__init__.py").read_text())
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    typed = {
        alias.asname or alias.name: "." * node.level + (node.module or "")
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == celery_ws._LAZY
    assert set(celery_ws._LAZY) == set(celery_ws.__all__) - {"__version__"}


@pytest.mark.parametrize("name", sorted(celery_ws._LAZY))
def test_each_public_name_is_the_object_of_its_home_module(name):
    home = importlib.import_module(celery_ws._LAZY[name], "celery_ws")
    assert getattr(celery_ws, name) is getattr(home, name)
    assert name in home.__all__, f"{name} is not public in {home.__name__}"


def test_importing_the_package_loads_none_of_its_modules():
    """Names resolve on first use: the top level loads only the version and the lazy lookup."""
    loaded = _modules_after("import celery_ws")
    assert {m for m in loaded if m.startswith("celery_ws.")} == {"celery_ws._lazy", "celery_ws._version"}


def test_an_unknown_name_is_an_attribute_error():
    assert not hasattr(celery_ws, "Nope")
    with pytest.raises(AttributeError, match="'Nope'"):
        celery_ws.Nope  # noqa: B018


# -- every public module ---------------------------------------------------------------------


def test_every_public_module_names_its_exports_and_each_exists():
    modules = _public_modules()
    assert len(modules) > 30  # the walk found the package
    for module in modules:
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names {missing}"


# -- exceptions ------------------------------------------------------------------------------


def test_every_exception_of_the_package_is_defined_under_the_root():
    errors = {
        value
        for module in _public_modules()
        for _, value in inspect.getmembers(module, inspect.isclass)
        if issubclass(value, BaseException) and value.__module__.startswith("celery_ws")
    }
    assert errors == {getattr(exceptions, name) for name in exceptions.__all__}
    assert all(issubclass(error, exceptions.CeleryWSError) for error in errors)
    assert all(error.__module__ == "celery_ws.exceptions" for error in errors)


def test_the_exception_tree_is_drawn_with_every_class():
    tree = (exceptions.__doc__ or "").partition("::")[2]
    assert [name for name in exceptions.__all__ if not re.search(rf"\b{name}\b", tree)] == []


def test_exceptions_stay_what_callers_already_catch():
    assert issubclass(exceptions.ConnectionLost, ConnectionError)
    assert issubclass(exceptions.ConfirmationTimeout, TimeoutError)
    assert issubclass(exceptions.SettingsError, ValueError)
    assert issubclass(exceptions.NotInTaskError, RuntimeError)


def test_exceptions_load_nothing_else_of_the_package():
    loaded = _modules_after("import celery_ws.exceptions")
    assert {m for m in loaded if m.startswith("celery_ws.")} == {
        "celery_ws._lazy",
        "celery_ws._version",
        "celery_ws.exceptions",
    }


# -- the wall between worker and server ------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "import celery_ws",
        "import celery_ws.worker",
        "from celery_ws import CeleryWS, ProgressTask, confirm_step, Publisher",
    ],
)
def test_a_worker_never_loads_websockets_or_the_server(statement):
    loaded = _modules_after(statement)
    assert "websockets" not in loaded
    assert not {m for m in loaded if m.startswith(("celery_ws.server", "celery_ws.client"))}


def test_the_server_never_loads_the_worker_side():
    loaded = _modules_after("from celery_ws import WebSocketManager")
    assert not {m for m in loaded if m.startswith("celery_ws.worker")}


def test_server_and_worker_sources_do_not_import_each_other():
    for side, other in (("server", "worker"), ("worker", "server")):
        for path in (ROOT / side).glob("*.py"):
            imports = [
                line
                for line in path.read_text().splitlines()
                if line.lstrip().startswith(("from ", "import "))
            ]
            assert not [line for line in imports if f"..{other}" in line or f"celery_ws.{other}" in line], (
                path
            )
