"""Timeouts and reminders through the time-travel harness: due order, cancellation on leaving a
state, stale timeouts, restarts, duplicates and reordering; and the harness's PostgreSQL option."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox import Event, clock
from outbox.tables import outbox_messages
from relay import failpoints
from relay.failpoints import FailpointHit
from sagabox import App
from sagabox.testing import DEFAULT_START, SagaHarness
from sagas import Saga, SagaContext, SagaDefinitionError, SagaRuntime, Timeout, on
from tests.offer_app import (
    CustomerReminded,
    OfferAccepted,
    OfferClosed,
    OfferCountered,
    OfferData,
    OfferMade,
    OfferReminder,
    OfferSaga,
    make_app,
)
from tests.saga_fixtures import ChecksJoin, CreditChecked, CriminalChecked

Harness = Callable[..., SagaHarness]
DAY = timedelta(days=1)


@pytest.fixture
def offers(saga_harness: Harness) -> SagaHarness:
    return saga_harness(make_app())


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    yield
    failpoints.disarm()


def _outcomes(h: SagaHarness, offer_id: str) -> list[tuple[str, str]]:
    return [(row["trigger"], row["outcome"]) for row in h.journal(OfferSaga, offer_id)]


def test_reminders_on_days_2_and_4_then_expiry_on_day_7(offers: SagaHarness) -> None:
    """One `advance` of eight days fires the chained timeouts in due order, each at its time."""
    offers.dispatch(OfferMade(offer_id="O-1"))
    offers.advance(8 * DAY)
    reminders = [s for s in offers.shipped if isinstance(s.message, CustomerReminded)]
    assert [DEFAULT_START + 2 * DAY, DEFAULT_START + 4 * DAY] == [s.at for s in reminders]
    assert [1, 2] == [s.message.number for s in reminders]  # type: ignore[attr-defined]
    [closed] = [s for s in offers.shipped if isinstance(s.message, OfferClosed)]
    assert (DEFAULT_START + 7 * DAY, "expired") == (closed.at, closed.message.outcome)  # type: ignore[attr-defined]
    assert "expired" == offers.state(OfferSaga, "O-1")


def test_accepting_on_day_3_cancels_the_rest(offers: SagaHarness) -> None:
    offers.dispatch(OfferMade(offer_id="O-1"))
    offers.advance(3 * DAY)
    offers.dispatch(OfferAccepted(offer_id="O-1"))
    offers.advance(30 * DAY)
    assert 1 == len(offers.published(CustomerReminded))
    assert ["accepted"] == [e.outcome for e in offers.published(OfferClosed)]
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    assert {} == saga.timeouts
    # The pending day-4 reminder and day-7 expiry were removed from the outbox, not just
    # ignored on arrival: nothing was delivered after day 3.
    with offers.transaction() as session:
        assert [] == session.execute(select(outbox_messages.c.type)).scalars().all()
    assert "stale" not in [outcome for _, outcome in _outcomes(offers, "O-1")]


@pytest.mark.parametrize(
    ("move_on", "state", "outcome"),
    [(OfferCountered, "negotiating", "stale"), (OfferAccepted, "accepted", "late")],
)
def test_a_timeout_arriving_after_its_state_was_left_is_ignored_and_journaled(
    offers: SagaHarness, move_on: type[OfferCountered | OfferAccepted], state: str, outcome: str
) -> None:
    """The day-2 reminder is already on the broker when a request handler moves the saga on:
    it arrives for a state the saga has left (stale) or for a finished saga (late), and is
    journaled, never fired."""
    offers.dispatch(OfferMade(offer_id="O-1"))
    offers.clock.tick(2 * DAY)
    assert 1 == offers.ship()  # the reminder is on its way...
    app = offers.apps[0]
    with offers.transaction() as session:  # ...when the customer answers
        app.runtime.handle(session, move_on(offer_id="O-1"))
    offers.run_until_quiet()
    assert ("offers.OfferReminder", outcome) == _outcomes(offers, "O-1")[-1]
    assert [] == offers.published(CustomerReminded)
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    assert (0, state, {}) == (saga.data.reminders, saga.state_name, saga.timeouts)


def test_a_relay_restarted_between_scheduling_and_due_time_fires_the_timeout_exactly_once(
    offers: SagaHarness,
) -> None:
    """The relay is replaced after scheduling; the first one to ship the due reminder fails
    after publishing, before committing; the next one ships it again: one reminder."""
    offers.dispatch(OfferMade(offer_id="O-1"))
    offers.restart_relay()
    offers.clock.tick(2 * DAY)
    failpoints.arm("relay.after_publish", "raise")
    with pytest.raises(FailpointHit):
        offers.ship()
    offers.restart_relay()
    offers.run_until_quiet()
    assert 1 == offers.workers[0].stats.duplicates  # the broker did deliver it twice
    assert 1 == len(offers.published(CustomerReminded))
    fired = [o for t, o in _outcomes(offers, "O-1") if t == OfferReminder.type_name]
    assert ["transition"] == fired
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    assert 1 == saga.data.reminders


def test_duplicate_and_reordered_deliveries_leave_the_same_final_state(
    saga_harness: Harness,
) -> None:
    """Credit and criminal results in order and once, or reversed and each twice: the same
    final state and data."""
    results = [CreditChecked(loan_id="L-1", ok=True), CriminalChecked(loan_id="L-1", clean=False)]
    finals = []
    for messages, copies in [(results, 1), (results[::-1], 2)]:
        h = saga_harness(App("checks", sagas=[ChecksJoin]))
        h.dispatch(*messages, copies=copies)
        saga = h.saga(ChecksJoin, "L-1")
        assert saga is not None
        finals.append((saga.state_name, saga.data))
        assert copies - 1 == h.workers[0].stats.duplicates // len(messages)
        h.close()
    assert finals[0] == finals[1]
    assert "both_done" == finals[0][0]


def test_schedule_refuses_what_it_cannot_do(offers: SagaHarness) -> None:
    from sagas import SagaContext

    saga = OfferSaga(
        correlation_id="x",
        state="offered",
        data=OfferData(),
        version=1,
        created_at=DEFAULT_START,
        updated_at=DEFAULT_START,
    )
    ctx = SagaContext(saga, OfferMade(offer_id="x"))
    with pytest.raises(TypeError, match="Timeout"):
        ctx.schedule("x", OfferMade(offer_id="x"), after=DAY)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="after= or at="):
        ctx.schedule("x", OfferReminder(offer_id="x"))
    with pytest.raises(ValueError, match="not both"):
        ctx.schedule("x", OfferReminder(offer_id="x"), after=DAY, at=DEFAULT_START)


_SCENARIO = """
from datetime import timedelta
from tests.offer_app import CustomerReminded, OfferAccepted, OfferSaga, OfferMade, make_app

def test_offer_on_the_harness_database(saga_harness):
    h = saga_harness(make_app())
    assert h.database.startswith("postgresql")
    h.dispatch(OfferMade(offer_id="O-1"))
    h.advance(timedelta(days=3))
    h.dispatch(OfferAccepted(offer_id="O-1"))
    h.advance(timedelta(days=30))
    assert 1 == len(h.published(CustomerReminded))
    assert "accepted" == h.state(OfferSaga, "O-1")
"""


def test_the_same_scenario_passes_on_postgresql_through_the_harness_option(
    pytester: pytest.Pytester, postgres_url: str
) -> None:
    """`pytest --sagabox-db URL` runs saga_harness on PostgreSQL (a scratch database per test)."""
    pytester.makepyfile(test_offer=_SCENARIO)
    repo = str(Path(__file__).resolve().parent.parent)
    pytester._monkeypatch.setenv("PYTHONPATH", repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = pytester.runpytest_subprocess("--sagabox-db", postgres_url, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_runtime_without_an_endpoint_refuses_to_schedule(engine: Engine) -> None:
    """Timeouts are addressed to an endpoint; a bare runtime says how to give it one."""
    runtime = SagaRuntime([OfferSaga])
    with Session(engine) as session, pytest.raises(SagaDefinitionError, match="endpoint="):
        runtime.handle(session, OfferMade(offer_id="O-1"))


class ReviewRequested(Event, type="reviews.ReviewRequested"):
    doc: str


class ReviewStarted(Event, type="reviews.ReviewStarted"):
    doc: str


class Nag(Timeout, type="reviews.Nag"):
    doc: str


class ReviewData(BaseModel):
    nags: list[str] = []


class Review(Saga[ReviewData], name="reviews.Review"):
    """Nags the reviewer every 4 hours, re-scheduling from the handler, across the move from
    waiting to reviewing (`outlive_state`), until the third nag."""

    states = ["new", "waiting", "reviewing"]
    transitions = [
        on(ReviewRequested, "new", "waiting", after="nag_later"),
        on(ReviewStarted, "waiting", "reviewing"),
        on(Nag, ["waiting", "reviewing"], None, after="nag"),
    ]
    correlation = {ReviewRequested: "doc", ReviewStarted: "doc", Nag: "doc"}

    def nag_later(self, ctx: SagaContext, message: ReviewRequested | Nag) -> None:
        ctx.schedule("nag", Nag(doc=message.doc), after=timedelta(hours=4), outlive_state=True)

    def nag(self, ctx: SagaContext, message: Nag) -> None:
        self.data.nags.append(f"{clock.now():%H:%M} {self.state_name}")
        if len(self.data.nags) < 3:
            self.nag_later(ctx, message)


def test_a_timeout_can_outlive_its_state_and_be_rescheduled_by_its_handler(
    saga_harness: Harness,
) -> None:
    h = saga_harness(App("reviews", sagas=[Review]))
    h.dispatch(ReviewRequested(doc="D-1"))
    h.advance(timedelta(hours=5))
    h.dispatch(ReviewStarted(doc="D-1"))
    h.advance(timedelta(days=2))
    saga = h.saga(Review, "D-1")
    assert saga is not None
    assert ["13:00 waiting", "17:00 reviewing", "21:00 reviewing"] == saga.data.nags
    assert {} == saga.timeouts
