"""Trace context through the outbox (the `tracing` extra: OpenTelemetry), so that one trace
follows a saga from the request that started it across every service it touches.

Writing a message copies the current trace context into its headers (W3C `traceparent`, through
OpenTelemetry's configured propagator); handling one opens a consumer span whose parent is that
context. Without OpenTelemetry installed both are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the extra is not installed: tracing is off
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]


def span_needed(headers: Mapping[str, str]) -> bool:
    """Whether handling a message with `headers` needs its consumer span.

    It does if OpenTelemetry is installed and either a tracer provider is configured (the span
    is recorded) or the message carries context the propagator reads (the span, even unrecorded,
    passes that context on to what the handler sends). Otherwise the span would be a no-op in
    an empty context, and a worker skips building one per message.
    """
    if trace is None or propagate is None:
        return False
    provider = trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return True
    # Any iterable: `fields` is typed as a set, but a hand-written propagator may return a list.
    return any(name in headers for name in propagate.get_global_textmap().fields)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to `headers`, unless the caller already set one."""
    if propagate is not None and "traceparent" not in headers:
        propagate.inject(headers)


@contextmanager
def consuming(
    *, endpoint: str, message_type: str, message_id: str, headers: Mapping[str, str]
) -> Iterator[Any]:
    """A span for handling one message, child of the context the message carries."""
    if trace is None or propagate is None:
        yield None
        return
    tracer = trace.get_tracer("sagabox")
    with tracer.start_as_current_span(
        f"{endpoint} process {message_type}",
        context=propagate.extract(dict(headers)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "sagabox",
            "messaging.operation.type": "process",
            "messaging.destination.name": endpoint,
            "messaging.message.id": message_id,
            "sagabox.message.type": message_type,
        },
    ) as span:
        yield span
