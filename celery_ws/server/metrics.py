"""Prometheus metrics for one server process, and the same figures as a dict.

Each server owns its registry (a second server in one process must not
collide on the global one); ``get_status()`` reads it back, so it shows this
process's own figures. ``/metrics`` renders the same registry, except under
``celery-ws serve --workers N``: the supervisor gives its processes one
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, which
keeps every value in a per-process file there), and ``/metrics``, whichever
process the kernel hands the scrape to, answers with the sum over all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from ..protocol import ACTIONS

__all__ = ["CONNECTION_OUTCOMES", "SHARED_DIR_VARIABLE", "Metrics"]

#: where prometheus_client keeps the values of processes that share their
#: metrics; read by prometheus_client when it is imported, so it is set
#: before the process starts
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

CONNECTION_OUTCOMES = (
    "accepted",
    "rejected_server_full",
    "rejected_user_full",
    "rejected_unauthorized",
    "rejected_origin",
    "closed_rate_limit",
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ANSWER_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The server's figures. ``connections`` counts this process's open
    connections; it is read into the gauge by :meth:`refresh`, which every read
    here calls (a gauge's ``set_function`` is invisible to the other processes
    of ``--workers N``, so they call :meth:`refresh` every second)."""

    def __init__(self, connections: Callable[[], int]) -> None:
        self._count_connections = connections
        self.registry = CollectorRegistry()
        r = self.registry
        # under --workers N: a sum over the live processes
        self.connections = Gauge(
            "celery_ws_active_connections",
            "Open WebSocket connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connection_outcomes = Counter(
            "celery_ws_connections", "Connection attempts by outcome", ["outcome"], registry=r
        )
        self.messages_in = Counter("celery_ws_messages_in", "Client frames by action", ["action"], registry=r)
        self.messages_out = Counter("celery_ws_messages_out", "Frames sent by type", ["type"], registry=r)
        self.send_failures = Counter(
            "celery_ws_send_failures", "Events not written to a connection that was closing", registry=r
        )
        self.slow_clients = Counter(
            "celery_ws_slow_clients_dropped", "Clients disconnected for not reading", registry=r
        )
        # every process reads the same figure from Redis: the latest one, not a sum
        self.pending_confirmations = Gauge(
            "celery_ws_pending_confirmations",
            "Open confirmations across all replicas",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.answer_latency = Histogram(
            "celery_ws_confirmation_answer_seconds",
            "From a question to its answer",
            buckets=_ANSWER_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "celery_ws_event_delivery_seconds",
            "From an event stored in Redis to its write to sockets",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bus_events = Counter(
            "celery_ws_bus_events",
            "Events received from Redis (live, or read back after a subscription)",
            registry=r,
        )
        self.redis_reconnects = Counter(
            "celery_ws_redis_reconnects", "Times the event reader reconnected to Redis", registry=r
        )
        # known labels start at 0, so a fresh server already shows them
        for outcome in CONNECTION_OUTCOMES:
            self.connection_outcomes.labels(outcome)
        for action in (*ACTIONS, "invalid"):
            self.messages_in.labels(action)
        shared_dir = os.environ.get(SHARED_DIR_VARIABLE)
        self.shared = shared_dir is not None
        self._exposed = r
        if shared_dir is not None:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, shared_dir)  # type: ignore[no-untyped-call]

    def refresh(self) -> None:
        """Bring the gauges that follow this process's state up to date."""
        self.connections.set(self._count_connections())

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """``/metrics``: this process's figures, or every process's summed when shared."""
        self.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self._exposed), content_type

    def snapshot(self) -> dict[str, Any]:
        """This process's counters and gauges as plain numbers, keyed like ``connections_accepted``."""
        self.refresh()
        figures: dict[str, Any] = {}
        for family in self.registry.collect():
            base = family.name.removeprefix("celery_ws_")
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                labels = "_".join(str(v) for v in sample.labels.values())
                suffix = sample.name.removeprefix(family.name).removeprefix("_total")
                key = "_".join(part for part in (base + suffix, labels) if part)
                figures[key] = int(sample.value) if float(sample.value).is_integer() else sample.value
        return figures
