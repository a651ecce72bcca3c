"""The checkout example: fan-out by choreography, and a fourth subscriber added by itself."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from examples.checkout.apps import apps, business, place_order
from examples.checkout.messages import Line, OrderCreated
from examples.checkout.tables import confirmations, picking_lists, reward_points
from outbox import HandlerContext, handles
from sagabox import App
from sagabox.testing import SagaHarness

analytics = MetaData()
sales = Table(
    "analytics_sales",
    analytics,
    Column("order_id", String(40), primary_key=True),
    Column("cents", Integer(), nullable=False),
)


@handles(OrderCreated)
def record_sale(ctx: HandlerContext, order: OrderCreated) -> None:
    """A new team's subscriber: written without touching the shop or the other three."""
    ctx.session.execute(insert(sales).values(order_id=order.order_id, cents=int(order.total * 100)))


def _order(h: SagaHarness, order_id: str) -> None:
    with h.transaction() as session:
        place_order(
            session,
            order_id=order_id,
            customer="Ada",
            lines=[Line(sku="book", quantity=2, price=Decimal("12.50"))],
        )
    h.run_until_quiet()


def test_one_order_reaches_email_warehouse_and_rewards(empty_database_url: str) -> None:
    with SagaHarness(*apps(), database=empty_database_url, business=[business]) as h:
        _order(h, "O-1")
        _order(h, "O-2")
        assert ["O-1", "O-2"] == [row.order_id for row in h.rows(confirmations)]
        assert [2, 2] == [row.items for row in h.rows(picking_lists)]
        assert [("Ada", 50)] == [(row.customer, row.points) for row in h.rows(reward_points)]


def test_a_fourth_subscriber_joins_without_changing_the_others(empty_database_url: str) -> None:
    """The same three apps, unchanged, plus an analytics endpoint: all four react."""
    original = apps()
    before = [(app.name, app.routing_keys()) for app in original]
    everyone = [*original, App("analytics", handlers=[record_sale])]
    with SagaHarness(*everyone, database=empty_database_url, business=[business, analytics]) as h:
        _order(h, "O-1")
        assert before == [(app.name, app.routing_keys()) for app in original]
        assert [("O-1", 2500)] == [(row.order_id, row.cents) for row in h.rows(sales)]
        assert 1 == len(h.rows(confirmations)) == len(h.rows(picking_lists))
        assert 1 == len(h.rows(reward_points))
