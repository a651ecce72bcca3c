"""One trace follows a message flow across endpoints, through the outbox and the broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagabox.testing import SagaHarness
from tests.graph_apps import Step1, chained

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracer_provider() -> None:
    """OpenTelemetry allows one global provider per process: set it once, export in memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans(_tracer_provider: None) -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_trace_spans_every_hop_of_a_message_chain(
    spans: InMemorySpanExporter, empty_database_url: str
) -> None:
    """A request publishes Step1; endpoints a, b, c and d each handle one step and publish the
    next. Every consumer span is in the request's trace, each the child of the one before."""
    with SagaHarness(*chained(), database=empty_database_url) as h:
        tracer = trace.get_tracer("tests")
        with tracer.start_as_current_span("POST /steps") as request:
            h.dispatch(Step1(), run=False)
        h.run_until_quiet()
    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    by_name = {span.name: span for span in finished}
    hops = [
        by_name[f"{endpoint} process graphtest.Step{n}"] for n, endpoint in enumerate("abcd", 1)
    ]
    context = request.get_span_context()
    assert all(hop.context is not None for hop in hops)
    assert {context.trace_id} == {hop.context.trace_id for hop in hops if hop.context}
    expected_parents = [context.span_id, *(hop.context.span_id for hop in hops[:-1] if hop.context)]
    assert expected_parents == [hop.parent.span_id if hop.parent else None for hop in hops]
    assert {trace.SpanKind.CONSUMER} == {hop.kind for hop in hops}
    assert "handled" == (hops[0].attributes or {}).get("sagabox.outcome")
