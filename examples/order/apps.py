"""The order system: the orchestrator, payments, inventory, and two choreographed listeners."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from outbox import HandlerContext, Outbox, handles
from sagabox import App

from .messages import (
    ChargePayment,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    OrderScreened,
    OutOfStock,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReserveInventory,
    ScreenOrder,
)
from .saga import OrderSaga
from .saga_v2 import OrderSagaV2
from .tables import business, charges, loyalty_points, notifications, stock

__all__ = ["apps", "apps_v2", "business", "place_order"]

DECLINED_CARDS = frozenset({"Eve"})


def place_order(session: Session, order: OrderPlaced) -> None:
    """The shop's checkout: publishes the order; the orchestrator takes it from there."""
    Outbox(session).add(order.model_copy(update={"correlation_id": order.order_id}))


@handles(ChargePayment)
def charge(ctx: HandlerContext, command: ChargePayment) -> None:
    """Safe to receive twice, even under a new message id: one charge per order, and the same
    answer every time (the orchestrator may have re-sent after a crash or a timeout)."""
    done = ctx.session.execute(
        select(charges.c.order_id).where(charges.c.order_id == command.order_id)
    ).first()
    if done is None:
        if command.customer in DECLINED_CARDS:
            ctx.publish(PaymentDeclined(order_id=command.order_id))
            return
        ctx.session.execute(
            insert(charges).values(order_id=command.order_id, amount=command.amount, refunded=False)
        )
    ctx.publish(PaymentCharged(order_id=command.order_id))


@handles(RefundPayment)
def refund(ctx: HandlerContext, command: RefundPayment) -> None:
    ctx.session.execute(
        update(charges).where(charges.c.order_id == command.order_id).values(refunded=True)
    )
    ctx.publish(PaymentRefunded(order_id=command.order_id))


@handles(ReserveInventory)
def reserve(ctx: HandlerContext, command: ReserveInventory) -> None:
    available = ctx.session.execute(
        select(stock.c.available).where(stock.c.sku == command.sku)
    ).scalar()
    if available is None or available < command.quantity:
        ctx.publish(OutOfStock(order_id=command.order_id))
        return
    ctx.session.execute(
        update(stock)
        .where(stock.c.sku == command.sku)
        .values(available=stock.c.available - command.quantity)
    )
    ctx.publish(InventoryReserved(order_id=command.order_id))


@handles(OrderCompleted, OrderCancelled)
def notify(ctx: HandlerContext, event: OrderCompleted | OrderCancelled) -> None:
    text = (
        f"Order {event.order_id} is confirmed"
        if isinstance(event, OrderCompleted)
        else f"Order {event.order_id} was cancelled: {event.reason}"
    )
    ctx.session.execute(insert(notifications).values(customer=event.customer, text=text))


@handles(OrderCompleted)
def award_loyalty_points(ctx: HandlerContext, event: OrderCompleted) -> None:
    ctx.session.execute(
        insert(loyalty_points).values(
            order_id=event.order_id, customer=event.customer, points=int(event.amount)
        )
    )


def apps(*, loyalty: App | None = None, payments: bool = True) -> list[App]:
    """The system; tests swap in another loyalty endpoint to show it cannot break an order,
    and leave payments out to keep orders waiting in `charging`."""
    return [
        App("orders", sagas=[OrderSaga], inputs=[OrderPlaced]),  # the shop (place_order)
        *([App("payments", handlers=[charge, refund])] if payments else []),
        App("inventory", handlers=[reserve]),
        App("notifications", handlers=[notify]),
        loyalty or App("loyalty", handlers=[award_loyalty_points]),
    ]


@handles(ScreenOrder)
def screen(ctx: HandlerContext, command: ScreenOrder) -> None:
    """v2's risk check: every order passes (a real one would score it)."""
    ctx.publish(OrderScreened(order_id=command.order_id))


def apps_v2(*, payments: bool = True) -> list[App]:
    """The system after the deploy of v2 of the order saga, with the risk service it calls."""
    return [
        App("orders", sagas=[OrderSagaV2], inputs=[OrderPlaced]),
        *([App("payments", handlers=[charge, refund])] if payments else []),
        App("inventory", handlers=[reserve]),
        App("risk", handlers=[screen]),
        App("notifications", handlers=[notify]),
        App("loyalty", handlers=[award_loyalty_points]),
    ]
