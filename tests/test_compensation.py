"""Compensation as a declaration: completed steps are undone in reverse order when the saga
fails, each through the outbox (retried like any command) and journaled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from kombu import Connection
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from outbox import Command, Event
from sagabox import RetryPolicy
from sagabox.testing import SagaHarness
from sagas import Saga, SagaContext, SagaDefinitionError, on, step
from sagas.compensation import COMPENSATING
from tests import trip_app
from tests.relay_helpers import wait_for
from tests.trip_app import (
    CancelFlight,
    CancelHotel,
    RefundCard,
    TripRequested,
    TripSaga,
    business,
    undone,
)


@pytest.fixture
def harness(empty_database_url: str) -> Iterator[SagaHarness]:
    trip_app.FLAKY.clear()
    trip_app.attempts.clear()
    with SagaHarness(*trip_app.apps(), database=empty_database_url, business=[business]) as h:
        yield h


def _book(h: SagaHarness, trip_id: str, destination: str = "Lisbon", card: str = "ok") -> None:
    h.dispatch(TripRequested(trip_id=trip_id, destination=destination, card=card), to="trips")


def _undone(h: SagaHarness, trip_id: str) -> list[str]:
    return [
        row.what for row in sorted(h.rows(undone), key=lambda r: r.id) if row.trip_id == trip_id
    ]


def _compensations(h: SagaHarness, trip_id: str) -> list[str]:
    return [
        line["trigger"] for line in h.journal(TripSaga, trip_id) if line["outcome"] == COMPENSATING
    ]


def test_a_trip_that_succeeds_undoes_nothing(harness: SagaHarness) -> None:
    _book(harness, "T-1")
    assert "booked" == harness.state(TripSaga, "T-1")
    assert [] == _undone(harness, "T-1")
    assert [] == _compensations(harness, "T-1")


def test_the_last_step_failing_undoes_the_completed_ones_newest_first(
    harness: SagaHarness,
) -> None:
    """The card is declined after hotel and flight were booked: the flight is cancelled, then
    the hotel; the card, never charged, is not refunded."""
    _book(harness, "T-2", card="declined")
    assert "cancelled" == harness.state(TripSaga, "T-2")
    assert ["CancelFlight", "CancelHotel"] == _undone(harness, "T-2")
    assert [CancelFlight.type_name, CancelHotel.type_name] == _compensations(harness, "T-2")
    assert [] == harness.sent(RefundCard)
    sent = harness.sent(CancelHotel)
    assert [("T-2", "Lisbon")] == [(c.trip_id, c.destination) for c in sent]  # copied fields
    saga = harness.saga(TripSaga, "T-2")
    assert saga is not None
    assert ["trips.CancelFlight", "trips.CancelHotel"] == saga.data.sagabox.compensated  # type: ignore[attr-defined]


def test_a_middle_step_failing_undoes_only_the_steps_before_it(harness: SagaHarness) -> None:
    _book(harness, "T-3", destination="nowhere")
    assert "cancelled" == harness.state(TripSaga, "T-3")
    assert ["CancelHotel"] == _undone(harness, "T-3")
    assert [] == harness.sent(CancelFlight)


def test_a_failing_compensation_is_retried_like_any_command(harness: SagaHarness) -> None:
    """The hotel's cancellation fails once: the worker schedules a retry, which undoes it
    exactly once; nothing is dead-lettered."""
    trip_app.FLAKY.add("T-4")
    _book(harness, "T-4", card="declined")
    assert ["CancelFlight"] == _undone(harness, "T-4")  # the hotel's retry is not due yet
    harness.advance(timedelta(minutes=2))
    assert ["CancelFlight", "CancelHotel"] == _undone(harness, "T-4")
    assert 2 == trip_app.attempts["T-4/CancelHotel"]
    assert [] == harness.dead_letters()
    assert 1 == len({c.message_id for c in harness.sent(CancelHotel)})  # one command, twice


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_compensations_travel_through_a_real_relay_and_worker(
    database_url: str, broker_url: str
) -> None:
    """End to end on the backend's database and RabbitMQ: relay and workers, the hotel's
    cancellation failing once and retried by the worker's policy."""
    trip_app.FLAKY.clear()
    trip_app.attempts.clear()
    trip_app.FLAKY.add("T-5")
    exchange = f"test-{uuid.uuid4().hex[:8]}"
    apps = trip_app.apps(
        database=database_url,
        broker=broker_url,
        exchange=exchange,
        retry=RetryPolicy(retry_at_once=(trip_app.SupplierHiccup,)),
    )
    business.create_all(apps[0].engine)
    workers = [app.worker() for app in apps]
    relay = apps[0].relay()
    try:
        for worker in workers:
            worker.drain()  # declares the queues
            with Connection(broker_url) as connection:
                worker.queue()(connection.channel()).purge()
        with Session(apps[0].engine) as session, session.begin():
            apps[0].start(
                session, TripSaga, TripRequested(trip_id="T-5", destination="Oslo", card="declined")
            )

        def settled() -> bool:
            relay.drain()
            for worker in workers:
                worker.drain()
            with apps[0].engine.connect() as connection:
                rows = connection.execute(select(undone.c.what).order_by(undone.c.id)).all()
            return [r.what for r in rows] == ["CancelFlight", "CancelHotel"]

        wait_for(settled, timeout=60, what="both compensations to be handled")
        runtime = apps[0].runtime
        with Session(apps[0].engine) as session:
            saga = runtime.load(session, TripSaga, "T-5")
        assert saga is not None
        assert "cancelled" == saga.state_name
        assert 2 == trip_app.attempts["T-5/CancelHotel"]
    finally:
        relay.close()
        with Connection(broker_url) as connection:
            for worker in workers:
                worker.queue()(connection.channel()).delete()
        for app in apps:
            app.engine.dispose()


# --- declarations and check() ----------------------------------------------------------------


class Reserve(Command, type="comptest.Reserve"):
    order_id: str


class Reserved(Event, type="comptest.Reserved"):
    order_id: str


class Failed(Event, type="comptest.Failed"):
    order_id: str


class Release(Command, type="comptest.Release"):
    order_id: str
    warehouse: str  # Reserve does not carry it


class Nothing(BaseModel):
    pass


def test_check_reports_a_compensation_that_cannot_be_built() -> None:
    class Unbuildable(Saga[Nothing], name="comptest.Unbuildable"):
        states = ["new", "reserving", {"name": "done", "final": True}]
        steps = [step(Reserve, compensate=Release, done=Reserved)]
        transitions = [
            on(Failed, "new", "reserving"),
            on(Reserved, "reserving", "done"),
            on(Failed, "reserving", "done", compensate=True),
        ]

    assert [
        "compensation never sent: Reserve → Release: Release needs ['warehouse'], which "
        "Reserve does not carry; pass step(..., build='method')"
    ] == [str(f) for f in Unbuildable.check()]


def test_check_reports_steps_nothing_ever_compensates_or_completes() -> None:
    class NeverUndone(Saga[Nothing], name="comptest.NeverUndone"):
        states = ["new", {"name": "done", "final": True}]
        steps = [step(Reserve, compensate=Release, done=Reserved, build="release")]
        transitions = [on(Failed, "new", "done")]

        def release(self, ctx: SagaContext, reserve: Reserve) -> Release:
            return Release(order_id=reserve.order_id, warehouse="north")

    assert [
        "compensation never sent: Reserve → Release: no transition says compensate=True",
        "compensation never sent: Reserve → Release: the step is done by ['Reserved'], which "
        "no transition handles",
    ] == [str(f) for f in NeverUndone.check()]


def test_compensate_without_steps_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(SagaDefinitionError, match="declares no steps"):

        class NoSteps(Saga[Nothing], name="comptest.NoSteps"):
            states = ["new", {"name": "done", "final": True}]
            transitions = [on(Failed, "new", "done", compensate=True)]


def test_a_build_method_that_does_not_exist_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="names no method"):

        class Missing(Saga[Nothing], name="comptest.Missing"):
            states = ["new", {"name": "done", "final": True}]
            steps = [step(Reserve, compensate=Release, build="nope")]
            transitions = [on(Failed, "new", "done", compensate=True)]


class AsyncBuild(Saga[Nothing], abstract=True):
    async def release_for(self, ctx: SagaContext, sent: Reserve) -> Release:
        return Release(**sent.model_dump(include=set(Release.model_fields)))


class NoCtxBuild(Saga[Nothing], abstract=True):
    def release_for(self, sent: Reserve) -> Release:
        return Release(**sent.model_dump(include=set(Release.model_fields)))


class StaticBuild(Saga[Nothing], abstract=True):
    @staticmethod
    def release_for(ctx: SagaContext, sent: Reserve) -> Release:
        return Release(**sent.model_dump(include=set(Release.model_fields)))


@pytest.mark.parametrize(
    ("base", "complaint"),
    [(AsyncBuild, "is `async def`"), (NoCtxBuild, r"takes \(ctx, sent_command\)")],
    ids=["async", "no-ctx"],
)
def test_a_build_method_that_cannot_run_is_refused_when_the_class_is_defined(
    base: type[Saga[Nothing]], complaint: str
) -> None:
    """Otherwise it fails only when the saga fails, and the failure is never compensated."""
    with pytest.raises(SagaDefinitionError, match=complaint):
        # A parametrised base: mypy cannot follow a class statement on a variable.
        class Broken(base, name=f"comptest.Broken{base.__name__}"):  # type: ignore[valid-type,misc,call-arg]
            states = ["new", {"name": "done", "final": True}]
            steps = [step(Reserve, compensate=Release, build="release_for")]
            transitions = [on(Failed, "new", "done", compensate=True)]


def test_a_static_build_method_is_accepted() -> None:
    class Static(StaticBuild, name="comptest.Static"):
        states = ["new", {"name": "done", "final": True}]
        steps = [step(Reserve, compensate=Release, build="release_for")]
        transitions = [on(Failed, "new", "done", compensate=True)]

    assert "release_for" == Static.steps[0].build


def test_the_diagram_draws_the_compensations_on_the_failing_edges() -> None:
    diagram = TripSaga.mermaid()
    assert (
        "    paying --> cancelled: trips.CardDeclined / undo RefundCard, CancelFlight, CancelHotel"
        in diagram.splitlines()
    )


class Unsendable(Saga[Nothing], name="comptest.Unsendable"):
    """Its compensation needs a warehouse the reservation does not name."""

    states = ["new", "reserving", {"name": "done", "final": True}]
    steps = [step(Reserve, compensate=Release, done=Reserved)]
    transitions = [
        on(Failed, "new", "reserving", after="reserve"),
        on(Reserved, "reserving", "done"),
        on(Failed, "reserving", "done", compensate=True),
    ]

    def reserve(self, ctx: SagaContext, failed: Failed) -> None:
        ctx.send(Reserve(order_id=failed.order_id), to="stock")


def test_graph_check_fails_on_a_compensation_that_can_never_be_sent() -> None:
    """`sagabox graph --check` reports it as an error, and knows the runtime sends the
    compensations of a sound saga (the order's refund is not "sent by nobody")."""
    from examples.order.apps import apps as order_apps
    from sagabox import App, graph

    stock = App("stock", sagas=[Unsendable], inputs=[Failed, Reserved])
    problems = [str(p) for p in graph.check(graph.build([stock]))]
    assert [p for p in problems if "compensation never sent" in p] == [
        "error: compensation never sent: comptest.Unsendable: Reserve → Release: Release needs "
        "['warehouse'], which Reserve does not carry; pass step(..., build='method')"
    ]
    assert [] == [str(p) for p in graph.check(graph.build(order_apps()))]
