"""What the server does with each client frame.

``ActionHandler.handle`` turns one raw frame into the frames to send back,
with its Redis effects; it never touches a socket, so it can be read and
tested on its own. An error becomes an error frame: it never closes the
connection and never reaches the server loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from ..forms import check_answer
from ..protocol import (
    Ack,
    Auth,
    Cancel,
    ClientAction,
    Confirm,
    ErrorCode,
    Ping,
    ProtocolError,
    ReplyType,
    Subscribe,
    Unsubscribe,
    dumps,
    error_frame,
    loads,
    parse_action,
)
from ..publisher import AsyncPublisher
from ..tokens import Identity
from .bus import EventBus
from .continuations import Continuer
from .metrics import Metrics
from .registry import Registry, Session
from .store import ServerStore

__all__ = ["ActionHandler", "Revoke"]

logger = logging.getLogger(__name__)

#: Revokes a Celery task by id (the server's only way to reach Celery).
Revoke = Callable[[str], Awaitable[None]]

# The scripts check who may act before anything else: a named user (every
# connection in token mode) gets ``forbidden`` for an id that is not theirs
# whether it exists or not, and whatever its state, so ids cannot be probed.
# ``unknown_callback``, ``not_found`` and ``unknown_message`` only reach
# anonymous open-mode connections.
#: how long a subscription waits for its channels to be live (Redis away: they will be)
_BUS_READY = 5.0

_ANSWER_REFUSALS: dict[str, tuple[ErrorCode, str]] = {
    "unknown_callback": ("unknown_callback", "Unknown callback_id"),
    "answered": ("already_answered", "This confirmation was answered already"),
    "cancelled": ("already_answered", "This confirmation was closed: its task was cancelled"),
    "closed": ("already_answered", "This confirmation was closed: its task has ended"),
    "expired": ("confirmation_expired", "This confirmation expired"),
    "forbidden": ("forbidden", "You may not answer this confirmation"),
}
_CANCEL_REFUSALS: dict[str, tuple[ErrorCode, str]] = {
    "not_found": ("not_found", "Unknown task_id"),
    "forbidden": ("forbidden", "You may not cancel this task"),
    "finished": ("task_finished", "This task has finished already"),
    "moved": ("internal_error", "The task's workflow kept moving on; try again"),
}


def _encode(frame: dict[str, Any]) -> bytes:
    return dumps(frame)


class ActionHandler:
    def __init__(
        self,
        registry: Registry,
        store: ServerStore,
        publisher: AsyncPublisher,
        revoke: Revoke | None,
        metrics: Metrics,
        *,
        token_mode: bool,
        continuer: Continuer | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.metrics = metrics
        self.bus = bus
        self.token_mode = token_mode
        self.registry = registry
        self.store = store
        self.publisher = publisher
        self.revoke = revoke
        self.continuer = continuer

    async def handle(self, session: Session, raw: str | bytes) -> list[bytes]:
        try:
            action = parse_action(raw)
        except ProtocolError as exc:
            self.metrics.messages_in.labels("invalid").inc()
            return [_encode(exc.frame())]
        self.metrics.messages_in.labels(action.action).inc()
        try:
            return await self.dispatch(session, action)
        except ProtocolError as exc:
            return [_encode(exc.frame())]
        except (redis.ConnectionError, redis.TimeoutError):
            logger.warning("Redis unavailable while handling a client frame")
            return [_encode(error_frame("internal_error", "Storage unavailable, try again"))]
        except Exception:
            logger.exception("error handling a client frame")
            return [_encode(error_frame("internal_error", "Internal error"))]

    async def dispatch(self, session: Session, action: ClientAction) -> list[bytes]:
        if isinstance(action, Ping):
            # the whole frame, ``action`` included, as the seed design echoes it
            original = action.model_dump()
            return [_encode({"type": ReplyType.PONG, "timestamp": time.time(), "original_data": original})]
        if isinstance(action, Subscribe):
            return await self.subscribe(session, action)
        if isinstance(action, Unsubscribe):
            self.registry.unsubscribe(session, user_id=action.user_id, task_id=action.task_id)
            return [
                _encode(
                    {"type": ReplyType.UNSUBSCRIBED, "user_id": action.user_id, "task_id": action.task_id}
                )
            ]
        if isinstance(action, Confirm):
            return await self.confirm(session, action)
        if isinstance(action, Ack):
            return await self.ack(session, action)
        if isinstance(action, Auth):
            raise ProtocolError(
                "invalid_message", "auth is only accepted as the first frame in token mode", field="action"
            )
        if isinstance(action, Cancel):
            return await self.cancel(session, action)
        raise AssertionError(f"unhandled action {action.action}")  # parse_action knows more than dispatch

    async def ack(self, session: Session, action: Ack) -> list[bytes]:
        """A client received a ``requires_ack`` message; wake its sender."""
        outcome = await self.store.ack(action.message_id, session.identity)
        if outcome == "unknown":
            raise ProtocolError(
                "unknown_message", "Unknown or expired message_id", message_id=action.message_id
            )
        if outcome == "forbidden":
            raise ProtocolError("forbidden", "This message was not sent to you", message_id=action.message_id)
        return [_encode({"type": ReplyType.ACK_RECEIVED, "message_id": action.message_id})]

    async def authenticated(
        self, session: Session, identity: Identity, last_event_id: str | None
    ) -> list[bytes]:
        """Token mode: a new connection follows its own user from the start, and
        catches up from ``last_event_id`` when it is a reconnect."""
        welcome = _encode(
            {"type": ReplyType.AUTHENTICATED, "user_id": identity.user_id, "expires_at": identity.expires_at}
        )
        return [welcome, *await self._follow(session, identity.user_id, None, last_event_id)]

    async def subscribe(self, session: Session, action: Subscribe) -> list[bytes]:
        if action.user_id is None and action.task_id is None:
            raise ProtocolError("invalid_message", "subscribe needs user_id or task_id", field="user_id")
        if self.token_mode:
            await self._authorize_subscription(session, action)
        if session.identity is None and action.user_id is not None:
            session.identity = action.user_id
        return await self._follow(session, action.user_id, action.task_id, action.last_event_id)

    async def _follow(
        self, session: Session, user_id: str | None, task_id: str | None, last_event_id: str | None
    ) -> list[bytes]:
        """Subscribe, then send what the client must see before live events:
        the confirmation, missed events (replay) and open questions.

        Meanwhile the connection's live events are held by the registry
        (released by the caller once these frames are sent), the open questions
        with them: they come after the confirmation (and, on connect, after
        ``authenticated``), nothing falls into the gap between history and live
        delivery, and nothing is sent twice or out of order.
        """
        channels = self.registry.channels(session, user_id, task_id)
        if self.bus is not None:  # where new channels start, read before registering
            await self.bus.prepare(channels)
        self.registry.hold(session)
        self.registry.subscribe(session, user_id=user_id, task_id=task_id)
        if self.bus is not None:  # live before confirmed: nothing falls between
            await self.bus.ready(channels, _BUS_READY)
        confirmed: dict[str, Any] = {
            "type": ReplyType.SUBSCRIPTION_CONFIRMED,
            "user_id": user_id,
            "task_id": task_id,
        }
        replay: list[bytes] = []
        if last_event_id is not None:
            confirmed["recovered"], history = await self.store.history(
                user_id, task_id, last_event_id, owner=session.identity
            )
            session.replayed = frozenset(event_id.decode() for event_id, _ in history)
            replay = [frame for _, frame in history]
        owner = session.identity
        state = await self.store.task_state(task_id, owner=owner) if task_id is not None else None
        pending = await self.store.pending_requests(user_id, task_id, owner=owner)
        if state is not None:
            confirmed["state"] = _only_open_question(state, pending)
        # open questions go out with the live events held meanwhile, in id order:
        # one asked while this subscription was being made is among both
        self.registry.hold_first(session, [(loads(frame)["id"], frame) for frame in pending])
        return [_encode(confirmed), *replay]

    async def _authorize_subscription(self, session: Session, action: Subscribe) -> None:
        """A token's user may follow themself and the tasks they own, nothing else.
        An unknown task is refused like a foreign one, so ids cannot be probed."""
        if action.user_id is not None and action.user_id != session.identity:
            raise ProtocolError("forbidden", "You may only subscribe to your own events", field="user_id")
        if action.task_id is not None and await self.publisher.owner_of(action.task_id) != session.identity:
            raise ProtocolError("forbidden", "You may only subscribe to your own tasks", field="task_id")

    async def confirm(self, session: Session, action: Confirm) -> list[bytes]:
        answered = await self.store.answer(
            action.callback_id,
            session.identity,
            action.proceed,
            action.feedback,
            action.data,
            check=lambda schema: check_answer(schema, action.data, callback_id=action.callback_id),
            claimer=self.continuer.replica if self.continuer is not None else None,
        )
        if answered.outcome != "ok":
            code, message = _ANSWER_REFUSALS.get(answered.outcome, ("internal_error", answered.outcome))
            raise ProtocolError(code, message, callback_id=action.callback_id)
        if answered.asked_at is not None:
            self.metrics.answer_latency.observe(max(0.0, time.time() - answered.asked_at))
        if answered.deferred and self.continuer is not None:
            # claimed with the answer: send it now (a replica without the app
            # leaves it to one with it, within a second)
            self.continuer.kick(action.callback_id)
        return [
            _encode(
                {
                    "type": ReplyType.CONFIRMATION_RECEIVED,
                    "callback_id": action.callback_id,
                    "proceed": action.proceed,
                }
            )
        ]

    async def cancel(self, session: Session, action: Cancel) -> list[bytes]:
        """Cancel the task and the workflow it belongs to (a deferred question's
        continuation is not sent); revoke the task and a continuation that may
        be queued already."""
        cancelled = await self.publisher.cancel(action.task_id, session.identity, owner_only=True)
        if cancelled.outcome != "ok":
            code, message = _CANCEL_REFUSALS.get(cancelled.outcome, ("internal_error", cancelled.outcome))
            raise ProtocolError(code, message, task_id=action.task_id)
        if self.revoke is not None:
            for task_id in cancelled.revoke:
                await self.revoke(task_id)
        return [_encode({"type": ReplyType.CANCEL_RECEIVED, "task_id": action.task_id})]


def _only_open_question(state: dict[str, Any], pending: list[bytes]) -> dict[str, Any]:
    """The stored step result keeps its ``callback_id`` after the question is
    answered, expired or closed by the task's end (``emit.lua`` stores it as
    asked): a late viewer gets it with ``callback_id: null`` unless the question
    is among those still open (``pending``, read after the state), so no page
    shows a dead question."""
    step = state.get("step_result")
    if isinstance(step, dict) and step.get("callback_id") is not None:
        still_open = {loads(frame).get("callback_id") for frame in pending}
        if step["callback_id"] not in still_open:
            state["step_result"] = {**step, "callback_id": None}
    return state
