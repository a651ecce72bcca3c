"""One trace follows a message flow across endpoints, through the outbox and the broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from outbox import tracing
from outbox.tables import outbox_messages
from outbox.writer import Outbox
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


@pytest.fixture
def no_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a service that configures no tracing: OpenTelemetry's default proxy provider."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)


@pytest.mark.usefixtures("no_tracer_provider")
def test_without_a_tracer_a_message_with_no_trace_context_needs_no_span() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not tracing.span_needed({"sagabox-type": "graphtest.Step1"})
    assert tracing.span_needed({"sagabox-type": "graphtest.Step1", "traceparent": _PARENT})


@pytest.mark.usefixtures("no_tracer_provider")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_a_tracer_a_message_still_passes_its_trace_on(empty_database_url: str) -> None:
    """A service that records no spans still hands the trace context of what it handles to
    what its handler sends, so the trace goes on past it."""
    with SagaHarness(*chained(), database=empty_database_url) as h:
        with h.transaction() as session:
            Outbox(session).add(Step1(), headers={"traceparent": _PARENT})
        h.ship()
        assert 1 == h.workers[0].drain()  # endpoint a handles Step1 and publishes Step2
        (row,) = h.rows(outbox_messages)
    assert _PARENT.split("-")[1] == row.headers["traceparent"].split("-")[1]


_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


_MALFORMED = [
    "garbage",
    "",
    "00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids: invalid
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # a version that is forbidden
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
    "x" * 600,  # past the 512 characters a propagator reads
]


@pytest.mark.parametrize("recording", [True, False], ids=["tracer", "no-tracer"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_message_with_a_malformed_trace_context_is_handled_and_starts_a_new_trace(
    request: pytest.FixtureRequest, empty_database_url: str, recording: bool
) -> None:
    """A peer's broken traceparent (with tracestate and baggage as broken) neither fails the
    message nor travels on: what the handler sends carries no copy of it."""
    request.getfixturevalue("spans" if recording else "no_tracer_provider")
    with SagaHarness(*chained(), database=empty_database_url) as h:
        for traceparent in _MALFORMED:
            broken = {"traceparent": traceparent, "tracestate": "=,=", "baggage": "%%%=;;"}
            with h.transaction() as session:
                Outbox(session).add(Step1(), headers=broken)
        h.ship()
        assert len(_MALFORMED) == h.workers[0].drain()
        rows = h.rows(outbox_messages)
    assert len(_MALFORMED) == len(rows)  # each handled: its Step2 is in the outbox
    assert not {row.headers.get("traceparent") for row in rows} & set(_MALFORMED)


class _ListedFields(TraceContextTextMapPropagator):
    """A propagator whose `fields` is a list, as a hand-written one may return it."""

    @property
    def fields(self) -> Any:
        return sorted(super().fields)


@pytest.mark.parametrize("recording", [True, False], ids=["tracer", "no-tracer"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_propagator_whose_fields_are_not_a_set_still_lets_messages_through(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    empty_database_url: str,
    recording: bool,
) -> None:
    """Without a tracer provider a worker asks the propagator which headers it reads; one that
    answers with a list made every message fail, and be dead-lettered."""
    request.getfixturevalue("spans" if recording else "no_tracer_provider")
    # What set_global_textmap sets, undone after the test.
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", _ListedFields())
    with SagaHarness(*chained(), database=empty_database_url) as h:
        with h.transaction() as session:
            Outbox(session).add(Step1(), headers={"traceparent": _PARENT})
        with h.transaction() as session:
            Outbox(session).add(Step1())
        h.ship()
        assert 2 == h.workers[0].drain()
        rows = h.rows(outbox_messages)
    assert 2 == len(rows)  # both handled: each Step1's Step2 is in the outbox
