"""Prometheus metrics (SPEC section 9), served at GET /metrics.

Counters and the engine histogram are counted where things happen: webhooks in
the web process, sends, status changes and engine calls wherever the job runs.
With several processes on one host (gunicorn workers, `gateway worker`), set
prometheus_client's PROMETHEUS_MULTIPROC_DIR to one shared, emptied-at-start
folder for all of them and /metrics adds their counts up. Queue depth and
active sessions are read from Redis and the database at scrape time, so they
are the same whichever process answers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.metrics")

WEBHOOKS = Counter(
    "gateway_webhooks_received", "Twilio webhooks received, by kind (sms, status) and outcome",
    ["kind", "outcome"],
)
MESSAGES = Counter(
    "gateway_messages_sent", "Outbound messages reaching a status (queued, sending, sent, delivered, undelivered, "
    "failed, blocked)", ["status"],
)
TURNS = Counter("gateway_turns", "Turns answered, by outcome (processed, failed)", ["outcome"])
ENGINE_LATENCY = Histogram(
    "gateway_engine_latency_seconds", "Time of one engine answer, retries included, by provider", ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
INBOUND_BATCH = Histogram(
    "gateway_inbound_batch_size", "Webhooks stored per transaction by group commit (1 when they come one at a time)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


def webhook(kind: str, outcome: str) -> None:
    WEBHOOKS.labels(kind, outcome).inc()


def message_status(status: str) -> None:
    MESSAGES.labels(status).inc()


def inbound_batch(size: int) -> None:
    INBOUND_BATCH.observe(size)


def turn(outcome: str, provider: str | None, elapsed_ms: int | None) -> None:
    TURNS.labels(outcome).inc()
    if provider and elapsed_ms is not None:
        ENGINE_LATENCY.labels(provider).observe(elapsed_ms / 1000)


class LiveState(Collector):
    """Gauges read at scrape time: the same numbers from every process."""

    def __init__(self, runtime: "Runtime"):
        self.runtime = runtime

    def collect(self):
        from gateway.db.models import Event, Session

        depth = GaugeMetricFamily("gateway_queue_depth", "Jobs waiting in the queue", labels=["queue"])
        try:
            depth.add_metric([self.runtime.queue.name], self.runtime.queue.depth())
        except Exception as error:  # a scrape must not fail because Redis is down; /healthz reports that
            log.warning("event=metrics.queue_unavailable error=%s", type(error).__name__)
        yield depth
        sessions = GaugeMetricFamily("gateway_active_sessions", "Sessions with status active")
        events = GaugeMetricFamily("gateway_events_pending", "Lifecycle events not yet delivered")
        with self.runtime.db() as tx:
            # Only active sessions hold an active_key, and it is uniquely indexed: an index count.
            sessions.add_metric([], tx.scalar(select(func.count(Session.active_key))) or 0)
            events.add_metric([], tx.scalar(select(func.count()).where(Event.status == "pending")) or 0)
        yield sessions
        yield events


def render(runtime: "Runtime") -> tuple[bytes, str]:
    """The Prometheus text for this process (or this host's processes in multiprocess mode)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (WEBHOOKS, MESSAGES, TURNS, ENGINE_LATENCY, INBOUND_BATCH):
            registry.register(collector)
    registry.register(LiveState(runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST

