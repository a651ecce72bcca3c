"""Two orders; each fans out to email, warehouse and rewards, none of which knows the others."""

from __future__ import annotations

from decimal import Decimal
from typing import TextIO

from sagabox.demo import Scene

from .apps import apps, business, place_order
from .messages import Line
from .tables import confirmations, picking_lists, reward_points

__all__ = ["TITLE", "apps", "business", "play", "report"]

TITLE = "checkout: one OrderCreated event, three independent subscribers"


def play(stage: Scene) -> None:
    with stage.request("Ada checks out two books and a lamp") as session:
        place_order(
            session,
            order_id="O-1",
            customer="Ada",
            lines=[
                Line(sku="book", quantity=2, price=Decimal("12.50")),
                Line(sku="lamp", quantity=1, price=Decimal("40")),
            ],
        )
    with stage.request("Ada orders another book") as session:
        place_order(
            session,
            order_id="O-2",
            customer="Ada",
            lines=[Line(sku="book", quantity=1, price=Decimal("12.50"))],
        )


def report(stage: Scene, out: TextIO) -> None:
    print("\nEach subscriber's own table:", file=out)
    for row in stage.rows(confirmations):
        print(f"  email      confirmation for {row.order_id} to {row.recipient}", file=out)
    for row in stage.rows(picking_lists):
        print(f"  warehouse  picking list for {row.order_id}: {row.items} items", file=out)
    for row in stage.rows(reward_points):
        print(f"  rewards    {row.customer} has {row.points} points", file=out)
