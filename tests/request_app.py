"""A checkout saga that requests a card charge from a payment endpoint and watches for its fault.

The payment handler's behaviour is chosen by the amount: it answers, answers twice, never
answers, or declines for good (`Unrecoverable`, so the charge is dead-lettered at payment).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from outbox import Command, Event, HandlerContext, handles
from relay import RetryPolicy, Unrecoverable
from sagabox import App
from sagas import Faulted, RequestTimedOut, Saga, SagaContext, on

CHARGE_TIMEOUT = timedelta(minutes=5)
FAST_RETRIES = RetryPolicy(immediate=0, delays=(timedelta(seconds=1),))

SILENT = 13  # the payment endpoint never answers this amount
TWICE = 7  # ...answers this one twice


class CheckoutStarted(Event, type="shop.CheckoutStarted"):
    order_id: str
    amount: int


class ChargeCard(Command, type="shop.ChargeCard"):
    amount: int


class CardCharged(Event, type="shop.CardCharged"):
    """The reply: no order id in it, so only its headers lead it to the saga."""

    auth_code: str


class ChargeWithoutWatching(Command, type="shop.ChargeWithoutWatching"):
    amount: int


class OrderShipped(Event, type="shop.OrderShipped"):
    order_id: str


class CheckoutData(BaseModel):
    amount: int = 0
    auth_codes: list[str] = []
    fault: str = ""
    timed_out_request: str = ""


class CheckoutSaga(Saga[CheckoutData], name="shop.Checkout"):
    states = [
        "new",
        "charging",
        "paid",
        "unanswered",
        {"name": "shipped", "final": True},
        {"name": "cancelled", "final": True},
    ]
    transitions = [
        on(CheckoutStarted, "new", "charging", after="charge"),
        on(CardCharged, "charging", "paid", after="record_charge"),
        on(RequestTimedOut[ChargeCard], "charging", "unanswered", after="record_timeout"),
        on(Faulted[ChargeCard], "charging", "cancelled", after="record_fault"),
        on(OrderShipped, ["paid", "unanswered"], "shipped"),
    ]
    correlation = {CheckoutStarted: "order_id", OrderShipped: "order_id"}

    def charge(self, ctx: SagaContext, message: CheckoutStarted) -> None:
        self.data.amount = message.amount
        ctx.request(ChargeCard(amount=message.amount), to="payment", timeout=CHARGE_TIMEOUT)

    def record_charge(self, ctx: SagaContext, message: CardCharged) -> None:
        self.data.auth_codes.append(message.auth_code)

    def record_timeout(self, ctx: SagaContext, message: RequestTimedOut[Any]) -> None:
        self.data.timed_out_request = str(message.request_id)

    def record_fault(self, ctx: SagaContext, message: Faulted[Any]) -> None:
        self.data.fault = f"{message.message_type} {message.faulted_id}: {message.reason}"


class PlainData(BaseModel):
    sent: int = 0


class PlainSaga(Saga[PlainData], name="shop.Plain"):
    """Sends a charge it does not watch: a fault for it must never come back."""

    states = ["new", {"name": "sent", "final": True}]
    transitions = [on(CheckoutStarted, "new", "sent", after="send")]
    correlation = {CheckoutStarted: "order_id"}

    def send(self, ctx: SagaContext, message: CheckoutStarted) -> None:
        ctx.send(ChargeWithoutWatching(amount=message.amount), to="payment")


@handles(ChargeCard)
def charge_card(ctx: HandlerContext, message: ChargeCard) -> None:
    if message.amount <= 0:
        raise Unrecoverable(f"card declined for amount {message.amount}")
    if message.amount == SILENT:
        return
    for copy in range(2 if message.amount == TWICE else 1):
        ctx.reply(CardCharged(auth_code=f"A{message.amount}-{copy}"))


@handles(ChargeWithoutWatching)
def charge_unwatched(ctx: HandlerContext, message: ChargeWithoutWatching) -> None:
    raise Unrecoverable("card declined")


def apps(**options: Any) -> tuple[App, App]:
    """The orders endpoint (the sagas) and the payment endpoint (the handler)."""
    orders = App("orders", sagas=[CheckoutSaga], retry=FAST_RETRIES, **options)
    payment = App(
        "payment", handlers=[charge_card, charge_unwatched], retry=FAST_RETRIES, **options
    )
    return orders, payment


def plain_apps(**options: Any) -> tuple[App, App]:
    """A sender that watches nothing, and the same payment endpoint."""
    orders = App("plain-orders", sagas=[PlainSaga], retry=FAST_RETRIES, **options)
    payment = App(
        "payment", handlers=[charge_card, charge_unwatched], retry=FAST_RETRIES, **options
    )
    return orders, payment
