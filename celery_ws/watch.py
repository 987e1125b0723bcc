"""Deprecated alias of :mod:`celery_ws.client.watch`, kept for one release."""

from __future__ import annotations

import warnings

from .client.watch import EXIT_CODES, EXIT_CONNECTION, EXIT_INTERRUPTED, watch

__all__ = ["EXIT_CODES", "EXIT_CONNECTION", "EXIT_INTERRUPTED", "watch"]

warnings.warn(
    "celery_ws.watch moved to celery_ws.client.watch; the old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)
