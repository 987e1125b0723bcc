"""Acknowledging ``requires_ack`` messages, and living with servers that cannot.

A sender's ``send_with_ack`` waits until one of the user's connections says
``ack``. A server from before acknowledgements answers ``ack`` with an
``unknown_action`` error: the client then stops acking on that connection and
keeps the refusal out of ``frames``, where it would pass for a request's reply.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..protocol import ReplyType
from .frames import Frame

__all__ = ["Acks"]


class Acks:
    def __init__(self, keep: int | None) -> None:
        #: message ids acknowledged, in order (the newest ``keep``)
        self.sent: deque[str] = deque(maxlen=keep)
        self._pending = 0
        self._supported = True

    def reset(self) -> None:
        """A new connection: its server may support acks."""
        self._pending = 0
        self._supported = True

    def is_refusal(self, frame: Frame) -> bool:
        """Whether ``frame`` is the server refusing one of our acks (then
        acking stops on this connection)."""
        if (
            frame.get("type") == ReplyType.ERROR
            and frame.get("code") == "unknown_action"
            and self._pending > 0
        ):
            self._pending -= 1
            self._supported = False
            return True
        return False

    async def ack(self, ws: ClientConnection, message_id: Any) -> None:
        if not self._supported:
            return
        self._pending += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"action": "ack", "message_id": message_id}))
            self.sent.append(str(message_id))
