"""Lazy public names (PEP 562) for a package's ``__init__``, as websockets'
``imports.py`` does.

A package lists the module each public name lives in; the module is imported
the first time the name is read, so importing the package costs nothing it
does not use: a Celery worker never loads ``websockets`` through
``celery_ws``, and a script never loads pytest through ``celery_ws.testing``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: imports each name of ``homes``
    (name → module, relative to ``package``) on first use and keeps it in the
    package, so later reads are plain attribute lookups."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
