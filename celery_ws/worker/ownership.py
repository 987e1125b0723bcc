"""Who owns a task: the ``celery_ws_user`` message header.

Celery keeps custom headers across retries but does not copy them to tasks
that a task starts, so ``before_task_publish`` copies the running task's owner
onto every message published from inside it: children, chains and groups then
report to the same person.
"""

from __future__ import annotations

from typing import Any

from celery import current_task

__all__ = ["OWNER_HEADER", "inherit_owner", "owner_of"]

OWNER_HEADER = "celery_ws_user"


def owner_of(request: Any) -> str | None:
    """The owner recorded on a task request (``task.request``), if any."""
    if request is None:
        return None
    owner = getattr(request, OWNER_HEADER, None)
    if owner is None:
        headers = getattr(request, "headers", None) or {}
        owner = headers.get(OWNER_HEADER)
    return owner if isinstance(owner, str) and owner else None


def inherit_owner(headers: dict[str, Any]) -> str | None:
    """Give a message about to be published its parent task's owner."""
    owner = headers.get(OWNER_HEADER)
    if owner is None:
        parent = current_task
        owner = owner_of(parent.request) if parent else None
        if owner is not None:
            headers[OWNER_HEADER] = owner
    return owner
