"""The order example's deploy of v2 with orders in flight, run in the harness across the deploy."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import insert

from examples.order.apps import apps, apps_v2, business, place_order
from examples.order.messages import OrderCompleted, OrderPlaced, ScreenOrder
from examples.order.saga import OrderSaga
from examples.order.saga_v2 import OrderSagaV2
from examples.order.tables import charges, stock
from sagabox.testing import SagaHarness


def _order(h: SagaHarness, order_id: str) -> None:
    with h.transaction() as session:
        place_order(
            session,
            OrderPlaced(
                order_id=order_id, customer="Ada", sku="lamp", quantity=1, amount=Decimal(40)
            ),
        )
    h.run_until_quiet()


def test_an_order_placed_under_v1_completes_on_the_v1_path_after_the_deploy(
    empty_database_url: str,
) -> None:
    """Start on v1 with payments down, advance time, deploy v2, continue: the v1 order is
    charged by the re-sent charge and skips v2's screening; an order placed after the deploy is
    screened."""
    with SagaHarness(*apps(payments=False), database=empty_database_url, business=[business]) as h:
        with h.transaction() as session:
            session.execute(insert(stock).values(sku="lamp", available=2))
        _order(h, "O-1")
        h.advance(timedelta(minutes=5))
        assert "charging" == h.state(OrderSaga, "O-1")

        h.deploy(*apps_v2())
        h.advance(timedelta(minutes=10))  # the charge re-sent at 10 minutes reaches payments
        old = h.saga(OrderSagaV2, "O-1")
        assert old is not None
        assert ("completed", 1) == (old.state_name, old.definition_version)
        assert [] == h.sent(ScreenOrder)

        _order(h, "O-2")
        assert "completed" == h.state(OrderSagaV2, "O-2")
        assert ["O-2"] == [command.order_id for command in h.sent(ScreenOrder)]
        assert ["O-1", "O-2"] == sorted(e.order_id for e in h.published(OrderCompleted))
        assert ["O-1", "O-2"] == sorted(row.order_id for row in h.rows(charges))
        assert [] == h.dead_letters()
        migrated = [line for line in h.journal(OrderSagaV2, "O-1") if line["outcome"] == "migrated"]
        assert [("charging", 1)] == [(m["to_state"], m["definition_version"]) for m in migrated]
