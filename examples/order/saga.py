"""The order saga: the critical path only. Charge the payment, reserve the stock, refund when
the stock is gone; what happens after `OrderCompleted` is not its business.

The refund is the charge's declared compensation (`steps`): when the stock is gone, every step
completed so far is undone, here the one charge. `OrderSteps` holds the actions that v2
(`saga_v2.py`) keeps as they are.

    new ─OrderPlaced─▶ charging ─PaymentCharged─▶ reserving ─InventoryReserved─▶ completed
                          │                                └─OutOfStock─▶ refunding ─▶ cancelled
                          └─PaymentDeclined, or no answer after 3 re-sends─▶ cancelled
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel

from sagas import Saga, SagaContext, on, step

from ..timing import HOUR
from .messages import (
    ChargeOverdue,
    ChargePayment,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    OutOfStock,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReserveInventory,
)

RETRY_EVERY = HOUR / 6
RETRIES = 3


class OrderFields(BaseModel):
    """What every version of the order saga keeps about its order."""

    customer: str = ""
    sku: str = ""
    quantity: int = 0
    amount: Decimal = Decimal(0)


class OrderData(OrderFields):
    charge_attempts: int = 0


D = TypeVar("D", bound=OrderFields)


class OrderSteps(Saga[D], abstract=True):
    """The actions every version of the order saga shares; each version counts its charges."""

    def send_charge(self, ctx: SagaContext, _cause: object) -> None:
        raise NotImplementedError

    def charge(self, ctx: SagaContext, order: OrderPlaced) -> None:
        self.data.customer, self.data.sku = order.customer, order.sku
        self.data.quantity, self.data.amount = order.quantity, order.amount
        self.send_charge(ctx, order)

    def _send_charge(self, ctx: SagaContext) -> None:
        ctx.send(
            ChargePayment(
                order_id=self.correlation_id, customer=self.data.customer, amount=self.data.amount
            ),
            to="payments",
        )
        ctx.schedule("charge-retry", ChargeOverdue(order_id=self.correlation_id), after=RETRY_EVERY)

    def give_up(self, ctx: SagaContext, _due: ChargeOverdue) -> None:
        self._cancel(ctx, "the payment service did not answer")

    def declined(self, ctx: SagaContext, _answer: PaymentDeclined) -> None:
        self._cancel(ctx, "payment declined")

    def reserve(self, ctx: SagaContext, _answer: object) -> None:
        ctx.send(
            ReserveInventory(
                order_id=self.correlation_id, sku=self.data.sku, quantity=self.data.quantity
            ),
            to="inventory",
        )

    def out_of_stock(self, ctx: SagaContext, _answer: PaymentRefunded) -> None:
        self._cancel(ctx, f"{self.data.sku} is out of stock; the payment was refunded")

    def complete(self, ctx: SagaContext, _answer: InventoryReserved) -> None:
        ctx.publish(
            OrderCompleted(
                order_id=self.correlation_id, customer=self.data.customer, amount=self.data.amount
            )
        )

    def _cancel(self, ctx: SagaContext, reason: str) -> None:
        ctx.publish(
            OrderCancelled(order_id=self.correlation_id, customer=self.data.customer, reason=reason)
        )


class OrderSaga(OrderSteps[OrderData], name="orders.Order"):
    """Orchestrates payment and inventory for one order."""

    states = [
        "new",
        "charging",
        "reserving",
        "refunding",
        {"name": "completed", "final": True},
        {"name": "cancelled", "final": True},
    ]
    # A charge the payment service confirmed is refunded if the order fails after it.
    steps = [step(ChargePayment, compensate=RefundPayment, done=PaymentCharged)]
    transitions = [
        on(OrderPlaced, "new", "charging", after="charge"),
        on(ChargeOverdue, "charging", None, conditions="may_retry", after="send_charge"),
        on(ChargeOverdue, "charging", "cancelled", after="give_up"),
        on(PaymentDeclined, "charging", "cancelled", after="declined"),
        on(PaymentCharged, "charging", "reserving", after="reserve"),
        on(InventoryReserved, "reserving", "completed", after="complete"),
        on(OutOfStock, "reserving", "refunding", compensate=True),
        on(PaymentRefunded, "refunding", "cancelled", after="out_of_stock"),
    ]
    # A re-sent charge gets a second answer from the payment service: nothing to do with it.
    ignore = {PaymentCharged: ["reserving", "refunding"]}
    correlation = {
        message: "order_id"
        for message in (
            OrderPlaced,
            ChargeOverdue,
            PaymentDeclined,
            PaymentCharged,
            InventoryReserved,
            OutOfStock,
            PaymentRefunded,
        )
    }

    def send_charge(self, ctx: SagaContext, _cause: object) -> None:
        """(Re-)send the charge: the payment service charges each order once, however often."""
        self.data.charge_attempts += 1
        self._send_charge(ctx)

    def may_retry(self, ctx: SagaContext, _due: ChargeOverdue) -> bool:
        return self.data.charge_attempts <= RETRIES
