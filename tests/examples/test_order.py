"""The order example: the orchestrated path, a re-sent charge, and side effects that fail
without breaking the order."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert

from examples.order.apps import apps, business, place_order
from examples.order.messages import (
    ChargePayment,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    PaymentCharged,
)
from examples.order.saga import OrderSaga
from examples.order.tables import charges, loyalty_points, notifications, stock
from outbox import HandlerContext, handles
from sagabox import App
from sagabox.testing import SagaHarness


def _start(h: SagaHarness, lamps: int = 1) -> None:
    with h.transaction() as session:
        session.execute(insert(stock).values(sku="lamp", available=lamps))


def _order(h: SagaHarness, order_id: str, customer: str) -> None:
    with h.transaction() as session:
        place_order(
            session,
            OrderPlaced(
                order_id=order_id, customer=customer, sku="lamp", quantity=1, amount=Decimal(40)
            ),
        )
    h.run_until_quiet()


@pytest.fixture
def harness(empty_database_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(*apps(), database=empty_database_url, business=[business]) as h:
        _start(h)
        yield h


def test_completed_refunded_and_declined_orders(harness: SagaHarness) -> None:
    for order_id, customer in [("O-1", "Ada"), ("O-2", "Bob"), ("O-3", "Eve")]:
        _order(harness, order_id, customer)
    states = [harness.state(OrderSaga, order_id) for order_id in ("O-1", "O-2", "O-3")]
    assert ["completed", "cancelled", "cancelled"] == states
    assert [("O-1", False), ("O-2", True)] == [
        (c.order_id, c.refunded) for c in harness.rows(charges)
    ]
    assert ["O-1"] == [e.order_id for e in harness.published(OrderCompleted)]
    assert [("Ada", 40)] == [(p.customer, p.points) for p in harness.rows(loyalty_points)]
    assert 3 == len(harness.rows(notifications))


def test_a_charge_sent_twice_charges_once(harness: SagaHarness) -> None:
    """The orchestrator sends "charge" again under a new message id (as after a crash and a
    timeout): the payment service answers again, charges once, and the saga moves on once."""
    _order(harness, "O-1", "Ada")
    harness.dispatch(
        ChargePayment(order_id="O-1", customer="Ada", amount=Decimal(40)), to="payments"
    )
    assert 1 == len(harness.rows(charges))
    assert 2 == len(harness.published(PaymentCharged))
    assert "completed" == harness.state(OrderSaga, "O-1")
    assert 1 == len(harness.published(OrderCompleted))


def test_the_orchestrator_resends_the_charge_then_gives_up(empty_database_url: str) -> None:
    """With the payment service down, the charge goes out again every 10 minutes, three
    times, and the order is cancelled after that."""
    running = [app for app in apps() if app.name != "payments"]
    with SagaHarness(*running, database=empty_database_url, business=[business]) as h:
        _start(h)
        _order(h, "O-1", "Ada")
        h.advance(timedelta(minutes=35))
        assert 4 == len(h.sent(ChargePayment))
        assert "charging" == h.state(OrderSaga, "O-1")
        h.advance(timedelta(minutes=10))
        assert ["the payment service did not answer"] == [
            e.reason for e in h.published(OrderCancelled)
        ]


@handles(OrderCompleted)
def broken_loyalty(ctx: HandlerContext, event: OrderCompleted) -> None:
    raise RuntimeError("the loyalty database is on fire")


def test_a_failing_side_effect_cannot_break_the_order(empty_database_url: str) -> None:
    """Loyalty fails every time: its message is retried and dead-lettered, while the order is
    completed and the customer notified."""
    system = apps(loyalty=App("loyalty", handlers=[broken_loyalty]))
    with SagaHarness(*system, database=empty_database_url, business=[business]) as h:
        _start(h)
        _order(h, "O-1", "Ada")
        h.advance(timedelta(minutes=5))  # the 1 s, 10 s and 60 s retries
        assert "completed" == h.state(OrderSaga, "O-1")
        assert ["Order O-1 is confirmed"] == [n.text for n in h.rows(notifications)]
        [letter] = h.dead_letters()
        assert ("loyalty", 4) == (letter.endpoint, letter.attempts)
        assert "on fire" in letter.reason


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_order_demo_runs_as_separate_processes_over_rabbitmq(
    empty_database_url: str, amqp_url: str
) -> None:
    """`sagabox demo order --db --broker`: a relay and five workers as their own processes."""
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "sagabox.cli", "demo", "order"),
            *("--db", empty_database_url, "--broker", amqp_url),
        ],
        cwd=Path(__file__).resolve().parent.parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr
    final = result.stdout.split("Final states:")[1]
    assert "Order O-1: completed" in final
    assert "Order O-2: cancelled" in final
    assert "Ada earned 40 points on O-1" in final
    assert "exit codes [0, 0, 0, 0, 0, 0]" in final
    assert "guest:guest" not in result.stdout + result.stderr
