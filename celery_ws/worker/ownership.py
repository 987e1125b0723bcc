"""Who owns a task: the ``celery_ws_user`` message header.

Celery keeps custom headers across retries but does not copy them to tasks
that a task starts, so ``before_task_publish`` copies the running task's owner
onto every message published from inside it: children, chains and groups then
report to the same person.
"""

from __future__ import annotations

from typing import Any

from celery import current_task

from ..deferred import CONTINUATION_HEADER, OWNER_HEADER, PARENT_HEADER, WORKFLOW_HEADER

__all__ = ["OWNER_HEADER", "continuation_of", "header", "inherit_owner", "links_of", "owner_of"]


def header(request: Any, name: str) -> str | None:
    """A custom header of a task request (Celery 5.3+ sets them as attributes,
    and keeps them in ``headers`` too), or of a message's headers (a dict)."""
    if request is None:
        return None
    value = request.get(name) if isinstance(request, dict) else getattr(request, name, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(name)
    return value if isinstance(value, str) and value else None


def owner_of(request: Any) -> str | None:
    """The owner recorded on a task request (``task.request``), if any."""
    return header(request, OWNER_HEADER)


def continuation_of(request: Any) -> str | None:
    """The callback id of the deferred question a continuation's run answers;
    None when the run is not a continuation."""
    return header(request, CONTINUATION_HEADER)


def links_of(request: Any) -> dict[str, str]:
    """``workflow_id`` and ``parent_task_id`` for the events of a continuation's
    run (empty for any other run). Unlike the owner, they are not inherited:
    a task started from a continuation is not part of its workflow."""
    workflow, parent = header(request, WORKFLOW_HEADER), header(request, PARENT_HEADER)
    if workflow is None:
        return {}
    return {"workflow_id": workflow, **({"parent_task_id": parent} if parent else {})}


def inherit_owner(headers: dict[str, Any]) -> str | None:
    """Give a message about to be published its parent task's owner."""
    owner = headers.get(OWNER_HEADER)
    if owner is None:
        parent = current_task
        owner = owner_of(parent.request) if parent else None
        if owner is not None:
            headers[OWNER_HEADER] = owner
    return owner
