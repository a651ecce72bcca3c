"""The one event of the checkout flow."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from outbox import Event


class Line(BaseModel):
    sku: str
    quantity: int
    price: Decimal


class OrderCreated(Event, type="shop.OrderCreated"):
    """An order was placed; whoever cares reacts on their own."""

    order_id: str
    customer: str
    lines: list[Line]

    @property
    def total(self) -> Decimal:
        return sum((line.price * line.quantity for line in self.lines), Decimal(0))
