"""Three orders: one completes (and is celebrated by notification and loyalty), one finds the
shelf empty and is refunded, one has its card declined."""

from __future__ import annotations

from decimal import Decimal
from typing import TextIO

from sqlalchemy import insert

from sagabox.demo import Scene

from .apps import apps, business, place_order
from .messages import OrderPlaced
from .tables import charges, loyalty_points, notifications, stock

__all__ = ["TITLE", "apps", "business", "play", "report"]

TITLE = "orders: an orchestrated critical path, then choreographed side effects"


def play(stage: Scene) -> None:
    with stage.request("the warehouse stocks 1 lamp") as session:
        session.execute(insert(stock).values(sku="lamp", available=1))
    for order_id, customer in [("O-1", "Ada"), ("O-2", "Bob"), ("O-3", "Eve")]:
        with stage.request(f"{customer} orders a lamp for 40") as session:
            place_order(
                session,
                OrderPlaced(
                    order_id=order_id, customer=customer, sku="lamp", quantity=1, amount=Decimal(40)
                ),
            )


def report(stage: Scene, out: TextIO) -> None:
    print("\nPayments, notifications and loyalty:", file=out)
    for charge in stage.rows(charges):
        state = "refunded" if charge.refunded else "charged"
        print(f"  {charge.order_id} {state} {charge.amount}", file=out)
    for note in stage.rows(notifications):
        print(f"  to {note.customer}: {note.text}", file=out)
    for points in stage.rows(loyalty_points):
        print(f"  {points.customer} earned {points.points} points on {points.order_id}", file=out)
