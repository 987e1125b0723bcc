"""Prometheus metrics for one server process, and the same figures as a dict.

Each server owns its registry (a second server in one process must not
collide on the global one); ``/metrics`` renders it and ``get_status()``
reads it back, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from ..protocol import ACTIONS

__all__ = ["CONNECTION_OUTCOMES", "Metrics"]

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
    def __init__(self, connections: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("celery_ws_active_connections", "Open WebSocket connections", registry=r)
        self.connections.set_function(connections)
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
        self.pending_confirmations = Gauge(
            "celery_ws_pending_confirmations", "Open confirmations across all replicas", registry=r
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
        self.redis_reconnects = Counter(
            "celery_ws_redis_reconnects", "Times the event reader reconnected to Redis", registry=r
        )
        # known labels start at 0, so a fresh server already shows them
        for outcome in CONNECTION_OUTCOMES:
            self.connection_outcomes.labels(outcome)
        for action in (*ACTIONS, "invalid"):
            self.messages_in.labels(action)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges as plain numbers, keyed like ``connections_accepted``."""
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
