"""``WebSocketManager``: the server that ``celery-ws serve`` runs.

It is also usable inside an asyncio application, with the seed design's
methods (``start_server``, ``notify_user``, ``broadcast_message``, ...). Those
methods go through Redis like any other publisher, so an application with
several replicas behaves the same as one with a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any, Unpack

import redis
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.typing import Subprotocol

from ..connections import async_client
from ..exceptions import SettingsError
from ..logs import settings_summary
from ..protocol import SUBPROTOCOL, TaskStepResult, UserConfirmation, event
from ..publisher import AsyncPublisher, ConfirmOptions
from ..settings import Settings
from .bus import EventBus
from .connection import ConnectionLoop
from .continuations import Continuer, SendTask
from .fanout import Fanout
from .handlers import ActionHandler, Revoke
from .housekeeping import Housekeeping
from .http import HttpEndpoints
from .keepalive import keep_alive
from .metrics import Metrics
from .registry import Registry
from .store import ServerStore
from .wsconn import Peer, PeerPolicy, peer_class

__all__ = ["WebSocketManager"]

logger = logging.getLogger(__name__)

_HEALTH_TIMEOUT = 1.0
_STOP_TIMEOUT = 5.0


class WebSocketManager:
    """A celery-ws server: Redis in, WebSockets out.

    Args:
        host: where to listen; default from settings (``WEBSOCKET_HOST``).
        port: where to listen; default from settings (``WEBSOCKET_PORT``).
            Port 0 picks a free port, see :attr:`port`.
        settings: a full settings object; else built from the environment and
            ``**overrides``.
        revoke: how to revoke a Celery task on ``cancel``; ``celery-ws serve
            --app`` passes ``app.control.revoke``. Without it cancellation is
            cooperative only (``progress()``, ``confirm_step()``, task start).
        send_task: how to send deferred questions' continuations (``--app``
            passes ``celery_sender(app)``); else other replicas send them.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        settings: Settings | None = None,
        revoke: Revoke | None = None,
        send_task: SendTask | None = None,
        **overrides: Any,
    ) -> None:
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["port"] = port
        self.settings = settings.model_copy(update=overrides) if settings else Settings.load(**overrides)
        keys = self.settings.keys
        self.metrics = Metrics(lambda: len(self.registry))
        self.publisher = AsyncPublisher(settings=self.settings)
        # the bus's own clients: its pub/sub connections (one per master on a
        # cluster), and its stream reads, which never wait behind (or on the
        # connections of) client requests
        self._bus_redis = async_client(self.settings.redis_url, blocking=True)
        self._bus_reads = async_client(self.settings.redis_url)
        self.bus = EventBus(
            self._bus_redis,
            self._bus_reads,
            lambda entries: self.fanout.deliver(entries),
            on_reconnect=self.metrics.redis_reconnects.inc,
            broadcasts=keys.broadcasts,
            on_received=self.metrics.bus_events.inc,
            catch_up=self.settings.history_max_events,
            sharded=self.settings.sharded_pubsub,
        )
        self.registry = Registry(self.bus, keys)
        self.fanout = Fanout(
            self.registry,
            self.metrics,
            self.settings.write_buffer_limit,
            compression_threshold=self.settings.compression_threshold,
        )
        self.continuer = (
            Continuer(self.publisher.redis, self.settings, self.publisher, send_task) if send_task else None
        )
        self.store = ServerStore(self.publisher.redis, self.settings)
        self.housekeeping = Housekeeping(self.store, self.publisher, self.metrics, self.continuer)
        self.handler = ActionHandler(
            self.registry,
            self.store,
            self.publisher,
            revoke,
            self.metrics,
            token_mode=self.settings.token_mode,
            continuer=self.continuer,
            bus=self.bus,
        )
        self.connections = ConnectionLoop(
            self.settings,
            self.registry,
            self.handler,
            lambda outcome: self.metrics.connection_outcomes.labels(outcome).inc(),
        )
        self.policy = PeerPolicy(
            max_connections=self.settings.max_connections,
            write_buffer_limit=self.settings.write_buffer_limit,
            close_timeout=self.settings.close_timeout,
            on_closing=self.registry.forget,
            on_slow=self.metrics.slow_clients.inc,
            on_refused=lambda: self.metrics.connection_outcomes.labels("rejected_server_full").inc(),
        )
        self.http = HttpEndpoints(self, self.settings)
        self._server: Server | None = None
        self._background: list[asyncio.Task[None]] = []
        # loops watch this as well as being cancelled: redis-py can swallow a
        # cancellation that lands while it connects
        self._stopping = asyncio.Event()
        self.started_at: float | None = None

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

    @property
    def ready(self) -> bool:
        return self.running and self.bus.connected

    async def start_server(self) -> Server:
        if self._server is not None:
            return self._server
        self._check_exposure()
        # a cluster client learns its slots before concurrent use (see AsyncPublisher)
        with contextlib.suppress(redis.RedisError, OSError):
            await self.publisher.redis.initialize()
        if self.continuer is not None:  # before listening: ask() may follow at once
            with contextlib.suppress(redis.RedisError, OSError):
                await self.continuer.register()
        self._stopping.clear()
        self._background = [
            asyncio.create_task(self.bus.run(self._stopping), name="celery-ws-bus"),
            asyncio.create_task(self.housekeeping.run(self._stopping), name="celery-ws-housekeeping"),
        ]
        if self.settings.ping_interval is not None:
            self._background.append(
                asyncio.create_task(
                    keep_alive(
                        self._peers, self.settings.ping_interval, self.settings.ping_timeout, self._stopping
                    ),
                    name="celery-ws-keepalive",
                )
            )
        self._server = await serve(
            self.connections.run,
            self.settings.host,
            self.settings.port,
            # WebSocket
            create_connection=peer_class(self.policy),
            select_subprotocol=_select_subprotocol,
            compression=None,
            extensions=_compression(self.settings.compression),
            # HTTP
            process_request=self.http.process_request,
            # Timeouts: pings come from keep_alive(), one task for all connections
            ping_interval=None,
            open_timeout=self.settings.auth_timeout,
            close_timeout=self.settings.close_timeout,
            # Limits
            max_size=self.settings.max_message_size,
            # Processes: --workers N runs N servers on this port, the kernel spreading connections
            reuse_port=self.settings.workers > 1,
        )
        self.started_at = time.time()
        logger.info(
            "celery-ws listening on ws://%s:%d: %s", self.host, self.port, settings_summary(self.settings)
        )
        return self._server

    async def stop_server(self) -> None:
        """Close every connection with 1001 (going away) and stop reading Redis.

        Takes at most ``close_timeout`` for the connections (a peer that does
        not answer the close is cut) plus ``auth_timeout`` for handshakes in
        progress, whatever the peers do."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            try:
                async with asyncio.timeout(self.settings.close_timeout + self.settings.auth_timeout + 1):
                    await server.wait_closed()
            except TimeoutError:
                logger.warning("%d connections did not close in time: cut", len(self.policy.live))
                for peer in list(self.policy.live):
                    peer.abort()
        self._stopping.set()
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=_STOP_TIMEOUT)
        self._background = []
        if self.continuer is not None:
            await self.continuer.stop()
        await self.store.close()
        await self.publisher.aclose()
        await self._bus_redis.aclose()
        await self._bus_reads.aclose()

    async def __aenter__(self) -> WebSocketManager:
        await self.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_server()

    async def serve_forever(self) -> None:
        server = await self.start_server()
        await server.wait_closed()

    def _check_exposure(self) -> None:
        """Refuse, before listening, settings that would expose users or fail
        every connection. Like Redis' protected mode: open mode trusts clients
        to say who they are, which is only acceptable on loopback or when the
        operator insists. Token mode needs keys that can verify a token."""
        from ..tokens import verification_keys

        if self.settings.token_mode:
            verification_keys(self.settings)
            return
        if not _is_loopback(self.settings.host) and not self.settings.insecure:
            raise SettingsError(
                f"refusing open mode on {self.settings.host}: any client could read and answer any "
                "user's tasks. Set CELERY_WS_SECRET (token mode) or pass --insecure / CELERY_WS_INSECURE=1"
            )
        logger.warning(
            "OPEN MODE: no CELERY_WS_SECRET, clients are not authenticated; "
            "every unsubscribed connection sees every event. Browser pages may connect only "
            "from loopback, CELERY_WS_PUBLIC_URL and CELERY_WS_ALLOWED_ORIGINS"
        )

    def _peers(self) -> list[Peer]:
        """Admitted connections, for the keepalive loop."""
        return list(self.registry.sessions)

    # -- health and status ------------------------------------------------------------

    async def redis_ok(self) -> bool:
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT):
                return bool(await self.publisher.redis.ping())
        except (redis.RedisError, OSError, TimeoutError):
            return False

    def metrics_exposition(self, accept: str) -> tuple[bytes, str]:
        return self.metrics.exposition(accept)

    def get_connection_count(self) -> int:
        return len(self.registry)

    def get_status(self) -> dict[str, Any]:
        figures = self.metrics.snapshot()
        return {
            "running": self.running,
            "host": self.host,
            "port": self.port,
            "active_connections": len(self.registry),
            "pending_callbacks": figures.get("pending_confirmations", 0),
            "redis_connected": self.bus.connected,
            "channels": self.bus.channels,
            "uptime": time.time() - self.started_at if self.started_at and self.running else 0.0,
            "mode": "token" if self.settings.token_mode else "open",
            **self.registry.counts(),
            **figures,
        }

    # -- the seed's API ---------------------------------------------------------------

    async def notify_user(
        self,
        step_result: TaskStepResult,
        user_id: str,
        task_id: str,
        step: int | None = None,
        **options: Unpack[ConfirmOptions],
    ) -> UserConfirmation:
        """Show a step result to ``user_id`` and wait for their answer; ``options``
        as for :meth:`AsyncPublisher.notify_user <celery_ws.AsyncPublisher.notify_user>`.

        Unlike the seed, a timeout raises ConfirmationTimeout unless a
        ``default`` is given: it never silently proceeds.
        """
        return await self.publisher.notify_user(step_result, user_id, task_id, step, **options)

    async def broadcast_message(self, message: dict[str, Any]) -> None:
        await self.publisher.broadcast(message)

    async def send_to_user(self, user_id: str, message: dict[str, Any]) -> None:
        await self.publisher.send_to_user(user_id, message)

    async def send_heartbeat(self, user_id: str, task_id: str, interval: float = 30) -> None:
        """Send ``heartbeat`` events for a task every ``interval`` s until cancelled."""
        while True:
            await self.publisher.emit(event("heartbeat", task_id=task_id, user_id=user_id, interval=interval))
            await asyncio.sleep(interval)


def _compression(enabled: bool) -> list[ServerPerMessageDeflateFactory]:
    """permessage-deflate without context takeover: each message is compressed
    on its own and the zlib state is freed after it, so an idle connection
    costs about what it costs uncompressed (websockets' default, context-keeping
    deflate measured 63 KiB), for about 15 % more CPU per frame and a slightly
    lower ratio on small events. It also lets one compressed frame serve every
    connection that negotiated the same window (``fanout.py``)."""
    if not enabled:
        return []
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
    ]


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """``celery-ws.v1`` when offered; a client that offers none (a plain browser
    ``new WebSocket(url)``) still connects."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
