"""The order flow's messages: the orchestrated commands and answers, and the public events."""

from __future__ import annotations

from decimal import Decimal

from outbox import Command, Event
from sagas import Timeout


class OrderPlaced(Event, type="orders.OrderPlaced"):
    order_id: str
    customer: str
    sku: str
    quantity: int
    amount: Decimal


class OrderCompleted(Event, type="orders.OrderCompleted"):
    """The critical path is done; notification and loyalty react on their own."""

    order_id: str
    customer: str
    amount: Decimal


class OrderCancelled(Event, type="orders.OrderCancelled"):
    order_id: str
    customer: str
    reason: str


class ChargeOverdue(Timeout, type="orders.ChargeOverdue"):
    order_id: str


class ChargePayment(Command, type="payments.ChargePayment"):
    order_id: str
    customer: str
    amount: Decimal


class RefundPayment(Command, type="payments.RefundPayment"):
    order_id: str


class PaymentCharged(Event, type="payments.PaymentCharged"):
    order_id: str


class PaymentDeclined(Event, type="payments.PaymentDeclined"):
    order_id: str


class PaymentRefunded(Event, type="payments.PaymentRefunded"):
    order_id: str


class ReserveInventory(Command, type="inventory.ReserveInventory"):
    order_id: str
    sku: str
    quantity: int


class InventoryReserved(Event, type="inventory.InventoryReserved"):
    order_id: str


class OutOfStock(Event, type="inventory.OutOfStock"):
    order_id: str


class ScreenOrder(Command, type="risk.ScreenOrder"):
    """v2 of the order saga screens every charged order before reserving its stock."""

    order_id: str
    customer: str
    amount: Decimal


class OrderScreened(Event, type="risk.OrderScreened"):
    order_id: str
