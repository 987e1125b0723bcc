"""``WebSocketManager``: the server that ``celery-ws serve`` runs.

It is also usable inside an asyncio application, with the seed design's
methods (``start_server``, ``notify_user``, ``broadcast_message``, ...). Those
methods go through Redis like any other publisher, so an application with
several replicas behaves the same as one with a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..connections import async_client
from ..protocol import TaskStepResult, UserConfirmation, event, with_id
from ..publisher import AsyncPublisher, Default
from ..settings import Settings
from .bus import EventBus, StreamEntry
from .handlers import ActionHandler, Revoke
from .registry import Registry, Session
from .store import ServerStore

__all__ = ["WebSocketManager"]

logger = logging.getLogger(__name__)

#: a client whose unsent data passes this is not reading: drop it rather than
#: buffer without bound or slow down delivery to everyone else
WRITE_BUFFER_LIMIT = 1 << 20
_COUNTS_INTERVAL = 1.0


class WebSocketManager:
    """A celery-ws server: Redis in, WebSockets out.

    Args:
        host, port: where to listen; default from settings (``WEBSOCKET_HOST``,
            ``WEBSOCKET_PORT``). Port 0 picks a free port, see :attr:`port`.
        settings: a full settings object; else built from the environment and
            ``**overrides``.
        revoke: how to revoke a Celery task on ``cancel``; ``celery-ws serve
            --app`` passes ``app.control.revoke``. Without it cancellation is
            cooperative only (``progress()``, ``confirm_step()``, task start).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        settings: Settings | None = None,
        revoke: Revoke | None = None,
        **overrides: Any,
    ) -> None:
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        self.settings = settings.model_copy(update=overrides) if settings else Settings.load(**overrides)
        self.registry = Registry()
        self.publisher = AsyncPublisher(settings=self.settings)
        self._bus_redis = async_client(self.settings.redis_url, blocking=True)
        self.bus = EventBus(self._bus_redis, self.settings.keys.events, self._deliver)
        self.store = ServerStore(self.publisher.redis, self.settings)
        self.handler = ActionHandler(self.registry, self.store, self.publisher, revoke)
        self._server: Server | None = None
        self._background: list[asyncio.Task[None]] = []
        self.pending_callbacks = 0
        self.started_at: float | None = None
        self.stats = {"events_delivered": 0, "messages_sent": 0, "slow_clients_dropped": 0,
                      "connections_total": 0, "connections_rejected": 0}

    # -- lifecycle --------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start_server(self) -> Server:
        if self._server is not None:
            return self._server
        self._background = [
            asyncio.create_task(self.bus.run(), name="celery-ws-bus"),
            asyncio.create_task(self._refresh_counts(), name="celery-ws-counts"),
        ]
        self._server = await serve(
            self._handle_connection,
            self.settings.host,
            self.settings.port,
            ping_interval=self.settings.ping_interval,
            ping_timeout=self.settings.ping_timeout,
        )
        self.started_at = time.time()
        logger.info("celery-ws listening on ws://%s:%d", self.host, self.port)
        return self._server

    async def stop_server(self) -> None:
        """Close every connection with 1001 (going away) and stop reading Redis."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background = []
        await self.publisher.aclose()
        await self._bus_redis.aclose()

    async def __aenter__(self) -> WebSocketManager:
        await self.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_server()

    async def serve_forever(self) -> None:
        server = await self.start_server()
        await server.wait_closed()

    async def _refresh_counts(self) -> None:
        """Keep the figures that live in Redis fresh for the synchronous get_status()."""
        while True:
            with contextlib.suppress(Exception):
                self.pending_callbacks = await self.store.pending_count()
            await asyncio.sleep(_COUNTS_INTERVAL)

    # -- connections ----------------------------------------------------------------

    async def _handle_connection(self, connection: ServerConnection) -> None:
        if len(self.registry) >= self.settings.max_connections:
            # a close code, unlike an HTTP 503, reaches browser code (seed: 1013)
            self.stats["connections_rejected"] += 1
            await connection.close(CloseCode.TRY_AGAIN_LATER, "Server connection limit reached")
            return
        session = Session(connection)
        self.registry.add(session)
        self.stats["connections_total"] += 1
        try:
            async for raw in connection:
                for frame in await self.handler.handle(session, raw):
                    await connection.send(frame.decode())
        except ConnectionClosed:
            pass
        finally:
            self.registry.remove(session)

    def _deliver(self, entries: list[StreamEntry]) -> None:
        """Route a batch from the bus; encode each event once for all its targets."""
        for event_id, payload, owner, task_id in entries:
            targets = self.registry.targets(owner.decode() or None, task_id.decode() or None)
            if targets:
                sent = self._send_all(targets, with_id(event_id, payload).decode())
                self.stats["messages_sent"] += sent
            self.stats["events_delivered"] += 1

    def _send_all(self, connections: Iterable[ServerConnection], text: str) -> int:
        healthy = []
        for conn in connections:
            transport = conn.transport
            if transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                logger.warning("dropping a client that stopped reading (%s)", conn.remote_address)
                self.stats["slow_clients_dropped"] += 1
                transport.abort()
                continue
            healthy.append(conn)
        broadcast(healthy, text)
        return len(healthy)

    # -- the seed's API ---------------------------------------------------------------

    async def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str,
        step: int | None = None,
        *,
        timeout: float | None = None,
        default: Default = None,
    ) -> UserConfirmation:
        """Show a step result to ``user_id`` and wait for their answer.

        Unlike the seed, a timeout raises ConfirmationTimeout unless a
        ``default`` is given: it never silently proceeds.
        """
        return await self.publisher.notify_user(step_result, user_id, task_id, step, timeout=timeout, default=default)

    async def broadcast_message(self, message: dict[str, Any]) -> None:
        await self.publisher.broadcast(message)

    async def send_to_user(self, user_id: str, message: dict[str, Any]) -> None:
        await self.publisher.send_to_user(user_id, message)

    async def send_heartbeat(self, user_id: str, task_id: str, interval: float = 30) -> None:
        """Send ``heartbeat`` events for a task every ``interval`` s until cancelled."""
        while True:
            await self.publisher.emit(event("heartbeat", task_id=task_id, user_id=user_id, interval=interval))
            await asyncio.sleep(interval)

    def get_connection_count(self) -> int:
        return len(self.registry)

    def get_status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "host": self.host,
            "port": self.port,
            "active_connections": len(self.registry),
            "pending_callbacks": self.pending_callbacks,
            "redis_connected": self.bus.connected,
            "redis_reconnects": self.bus.reconnects,
            "uptime": time.time() - self.started_at if self.started_at else 0.0,
            **self.registry.counts(),
            **self.stats,
        }
