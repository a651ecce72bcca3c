"""Prometheus metrics: scraped over HTTP after real traffic through relay, worker and sagas."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import insert
from sqlalchemy.orm import Session

from outbox.database import make_engine
from relay import RetryPolicy
from sagabox.metrics import Metrics
from sagabox.testing import SagaHarness
from tests.bank_app import Deposit, accounts
from tests.offer_app import OfferAccepted, OfferCountered, OfferMade, make_app
from tests.relay_helpers import Bank, bank_endpoint


def _scrape(metrics: Metrics) -> Iterator[str]:
    server, _thread = metrics.serve(0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            yield from response.read().decode().splitlines()
    finally:
        server.shutdown()
        server.server_close()


def _value(lines: list[str], name: str, **labels: str) -> float:
    """The value of one series, its labels in Prometheus' (sorted) order."""
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    series = f"{name}{{{inner}}} " if labels else f"{name} "
    [line] = [line for line in lines if line.startswith(series)]
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def bank(database_url: str, memory_broker: str) -> Iterator[Bank]:
    with bank_endpoint(database_url, memory_broker, retry=RetryPolicy(delays=())) as bank:
        yield bank


def test_relay_worker_and_backlog_metrics_after_traffic(
    bank: Bank, frozen_clock: FrozenDateTimeFactory
) -> None:
    metrics = Metrics(bank.engine)
    bank.relay.observer = bank.worker.observer = metrics
    with Session(bank.engine) as session, session.begin():
        session.execute(insert(accounts).values(id="closed", open=False))
    bank.send(
        *[Deposit(account="a", amount=n) for n in range(3)], Deposit(account="closed", amount=1)
    )
    frozen_clock.tick(timedelta(seconds=30))
    before = list(_scrape(metrics))
    assert 4 == _value(before, "sagabox_outbox_backlog")
    assert 30 == _value(before, "sagabox_outbox_oldest_age_seconds")

    bank.relay.drain()
    bank.worker.drain()
    after = list(_scrape(metrics))
    endpoint, deposit = bank.app.name, "bank.Deposit"
    assert 4 == _value(after, "sagabox_relay_published_total")
    worker = "sagabox_worker_messages_total"
    assert 3 == _value(after, worker, endpoint=endpoint, outcome="handled", type=deposit)
    assert 1 == _value(after, worker, endpoint=endpoint, outcome="dead_lettered", type=deposit)
    assert 4 == _value(after, "sagabox_worker_handling_seconds_count", endpoint=endpoint)
    # The 3 Deposited events the handler published wait in the outbox now.
    assert 3 == _value(after, "sagabox_outbox_backlog")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_saga_transitions_and_timeouts_fired_or_stale(empty_database_url: str) -> None:
    app = make_app()
    app.metrics = metrics = Metrics()
    with SagaHarness(app, database=empty_database_url) as h:
        h.dispatch(OfferMade(offer_id="O-1"), OfferMade(offer_id="O-2"))
        h.advance(timedelta(days=2))  # a reminder fires for each
        h.clock.tick(timedelta(days=2))
        h.ship()  # the day-4 reminders are on their way when both offers move on
        with h.transaction() as session:
            app.runtime.handle(session, OfferAccepted(offer_id="O-1"))
            app.runtime.handle(session, OfferCountered(offer_id="O-2"))
        h.run_until_quiet()
    lines = list(_scrape(metrics))
    offer, transitions = "offers.Offer", "sagabox_saga_transitions_total"
    made = _value(lines, transitions, from_state="new", saga_type=offer, to_state="offered")
    reminded = _value(lines, transitions, from_state="offered", saga_type=offer, to_state="offered")
    assert (2, 2) == (made, reminded)
    timeouts = "sagabox_saga_timeouts_total"
    assert 2 == _value(lines, timeouts, result="fired", saga_type=offer)
    assert 2 == _value(lines, timeouts, result="stale", saga_type=offer)


def test_a_scrape_answers_when_the_database_cannot(
    empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database without the outbox table (or down) fails the backlog query: the scrape
    still serves the counters, says the backlog is unreadable, and logs why."""
    engine = make_engine(empty_database_url)
    metrics = Metrics(engine)
    metrics.relay_batch(published=2, unroutable=0, seconds=0.01)
    try:
        lines = list(_scrape(metrics))
    finally:
        engine.dispose()
    assert 2 == _value(lines, "sagabox_relay_published_total")
    assert 0 == _value(lines, "sagabox_outbox_readable")
    assert not [line for line in lines if line.startswith("sagabox_outbox_backlog")]
    assert "cannot read the outbox backlog" in caplog.text
