"""Client frames: what a client may send, and how the server reads it.

Each frame is a JSON object discriminated by ``action`` and validated strictly
(``"proceed": "yes"`` is an error, not a truthy string); :func:`parse_action`
turns anything else into a :class:`~celery_ws.exceptions.ProtocolError` that
names the offending field. Part of the wire protocol, and re-exported by
:mod:`celery_ws.protocol`, its documented home; kept apart from the events and
their encoding so each half reads on its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from .exceptions import ProtocolError

__all__ = [
    "ACTIONS",
    "MAX_DEPTH",
    "Ack",
    "Auth",
    "Cancel",
    "ClientAction",
    "Confirm",
    "EventId",
    "Identifier",
    "Ping",
    "Subscribe",
    "Unsubscribe",
    "parse_action",
]

#: User, task, callback and message ids a client may name: bounded and boring.
#: No ``{`` or ``}``: keys.py encloses every id in braces, and an id without
#: them fills its Redis Cluster hash tag exactly.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@+\-]+$")]

#: An event id as Redis streams make them: milliseconds-sequence.
EventId = Annotated[str, StringConstraints(max_length=41, pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")]

#: How deeply the values of a client frame may nest (a confirm's ``data``, the
#: extra fields a ping echoes). Far below what orjson decodes (1024 levels) and
#: encodes (254), so whatever a client may send can also be stored and sent
#: back inside the records and frames that wrap it.
MAX_DEPTH: Final = 32


class _Action(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Subscribe(_Action):
    action: Literal["subscribe"]
    user_id: Identifier | None = None
    task_id: Identifier | None = None
    #: replay what was missed after this event, then go live
    last_event_id: EventId | None = None


class Unsubscribe(_Action):
    action: Literal["unsubscribe"]
    user_id: Identifier | None = None
    task_id: Identifier | None = None


class Confirm(_Action):
    action: Literal["confirm"]
    callback_id: Identifier
    proceed: bool
    feedback: Annotated[str, StringConstraints(max_length=4096)] | None = None
    #: the form's answer, for a confirmation that sent an ``answer_schema``
    data: dict[str, Any] | None = None


class Ack(_Action):
    action: Literal["ack"]
    message_id: Identifier


class Cancel(_Action):
    action: Literal["cancel"]
    task_id: Identifier
    user_id: Identifier | None = None


class Auth(_Action):
    action: Literal["auth"]
    token: Annotated[str, StringConstraints(max_length=8192)]
    last_event_id: EventId | None = None


class Ping(_Action):
    model_config = ConfigDict(strict=True, extra="allow")
    action: Literal["ping"]


ClientAction = Subscribe | Unsubscribe | Confirm | Cancel | Ping | Auth | Ack
_ACTION_MODELS: Final[dict[str, type[_Action]]] = {
    "ack": Ack,
    "auth": Auth,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "confirm": Confirm,
    "cancel": Cancel,
    "ping": Ping,
}
ACTIONS: Final = tuple(_ACTION_MODELS)


def parse_action(raw: str | bytes) -> ClientAction:
    """Decode and validate one client frame.

    Raises:
        ProtocolError: with ``invalid_json``, ``unknown_action`` or
            ``invalid_message`` (naming the offending field).
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json", "Invalid JSON format") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "A message must be a JSON object", field="")
    action = data.get("action")
    model = _ACTION_MODELS.get(action) if isinstance(action, str) else None
    if model is None:
        raise ProtocolError("unknown_action", f"Unknown action: {action}", action=_short(action))
    for field, value in data.items():
        if _deeper_than(value, MAX_DEPTH):
            name = _short(field)
            raise ProtocolError(
                "invalid_message",
                f"Invalid field {name!r}: nested deeper than {MAX_DEPTH} levels",
                field=name,
            )
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ProtocolError(
            "invalid_message", f"Invalid field {field!r}: {first['msg']}", field=field
        ) from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels in ``value``.

    A loop, not recursion: what orjson accepts (1024 levels) is deeper than
    Python's recursion limit.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _short(value: Any) -> Any:
    """Echo a client value back without echoing a megabyte."""
    return value[:64] if isinstance(value, str) else None
