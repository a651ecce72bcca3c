"""Prometheus metrics for the relay, the worker and the sagas (the `metrics` extra).

    metrics = Metrics(app.engine)
    app.metrics = metrics          # the app's worker, relay and sagas report to it
    metrics.serve(9464)            # GET http://127.0.0.1:9464/metrics

The outbox backlog and the age of its oldest due row are read from the database at each scrape;
everything else is counted as it happens, after the transaction it describes has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from outbox import clock
from outbox.messages import Message
from outbox.tables import outbox_messages
from outbox.urls import mask_secrets
from relay.observe import Observer
from sagas.outcomes import Handled
from sagas.timeouts import Timeout

log = logging.getLogger("sagabox.metrics")


class Metrics(Observer):
    """Counters, histograms and the outbox gauges, in a registry of their own."""

    def __init__(self, engine: Engine | None = None, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "sagabox_relay_published", "Messages the relay shipped", registry=r
        )
        self.unroutable = Counter(
            "sagabox_relay_unroutable",
            "Messages the broker could not route to any queue (kept for later)",
            registry=r,
        )
        self.relay_failures = Counter(
            "sagabox_relay_failures", "Relay batches rolled back", registry=r
        )
        self.relay_retried = Counter(
            "sagabox_relay_retried",
            "Rows the broker did not take (unroutable, nacked, refused), kept for a later try",
            registry=r,
        )
        self.relay_dead_lettered = Counter(
            "sagabox_relay_dead_lettered",
            "Rows the relay gave up on after their attempts, now dead letters",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "sagabox_relay_batch_seconds", "Time to claim, publish, confirm and commit a batch",
            registry=r,
        )  # fmt: skip
        self.messages = Counter(
            "sagabox_worker_messages",
            "Messages a worker finished, by outcome (handled, duplicate, retry_scheduled, "
            "dead_lettered)",
            ["endpoint", "type", "outcome"],
            registry=r,
        )
        self.handling_seconds = Histogram(
            "sagabox_worker_handling_seconds", "Time to handle one message", ["endpoint"],
            registry=r,
        )  # fmt: skip
        self.transitions = Counter(
            "sagabox_saga_transitions",
            "Messages that moved (or kept) a saga in a state",
            ["saga_type", "from_state", "to_state"],
            registry=r,
        )
        self.timeouts = Counter(
            "sagabox_saga_timeouts",
            "Timeouts that fired, and those ignored because the saga had moved on",
            ["saga_type", "result"],
            registry=r,
        )
        if engine is not None:
            r.register(_OutboxCollector(engine))

    # --- relay and worker (the Observer hooks) ---

    def relay_batch(self, *, published: int, unroutable: int, seconds: float) -> None:
        self.published.inc(published)
        self.unroutable.inc(unroutable)
        self.batch_seconds.observe(seconds)

    def relay_failed(self, error: BaseException) -> None:
        self.relay_failures.inc()

    def relay_rows_failed(self, *, retried: int, dead_lettered: int) -> None:
        self.relay_retried.inc(retried)
        self.relay_dead_lettered.inc(dead_lettered)

    def message_processed(
        self, *, endpoint: str, message_type: str, outcome: str, seconds: float
    ) -> None:
        self.messages.labels(endpoint, message_type, outcome).inc()
        self.handling_seconds.labels(endpoint).observe(seconds)

    # --- sagas (called by App after the worker's transaction committed) ---

    def sagas_handled(self, handled: Sequence[Handled], message: Message) -> None:
        """Count transitions per saga type and state, and timeouts fired or found stale."""
        for result in handled:
            if result.outcome in ("transition", "unchanged"):
                self.transitions.labels(
                    result.saga_type, result.from_state or "", result.to_state or ""
                ).inc()
            if isinstance(message, Timeout):
                fired = result.outcome in ("transition", "unchanged")
                self.timeouts.labels(result.saga_type, "fired" if fired else "stale").inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[WSGIServer, Thread]:
        """Expose /metrics over HTTP from a daemon thread; port 0 picks a free one."""
        return start_http_server(port, addr=host, registry=self.registry)


class _OutboxCollector(Collector):
    """The outbox backlog, read at scrape time: how much is due, and since when.

    When the database cannot answer, the scrape still serves every other metric, with
    `sagabox_outbox_readable` at 0, rather than fail with HTTP 500.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Any]:
        now = clock.now()
        try:
            with self._engine.connect() as connection:
                count, oldest = connection.execute(
                    select(func.count(), func.min(outbox_messages.c.available_at)).where(
                        outbox_messages.c.available_at <= now
                    )
                ).one()
        except Exception as exc:  # a scrape must never fail: whatever went wrong, say so
            log.warning(
                "metrics: cannot read the outbox backlog (%s: %s); serving the other metrics",
                type(exc).__name__,
                mask_secrets(str(exc).splitlines()[0] if str(exc) else ""),
            )
            yield self._readable(0)
            return
        yield self._readable(1)
        yield GaugeMetricFamily(
            "sagabox_outbox_backlog", "Outbox rows due and not yet shipped", value=count
        )
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "sagabox_outbox_oldest_age_seconds", "How long the oldest due row has waited",
            value=age,
        )  # fmt: skip

    @staticmethod
    def _readable(value: int) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sagabox_outbox_readable",
            "1 if the last scrape could read the outbox backlog from the database, else 0",
            value=value,
        )
