"""The shop (which publishes) and its three subscribers, each an endpoint of its own."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from outbox import HandlerContext, Outbox, handles
from sagabox import App

from .messages import Line, OrderCreated
from .tables import business, confirmations, orders, picking_lists, reward_points

__all__ = ["apps", "business", "place_order"]


def place_order(session: Session, *, order_id: str, customer: str, lines: list[Line]) -> None:
    """The shop's checkout: the order row and its event commit together."""
    event = OrderCreated(order_id=order_id, customer=customer, lines=lines)
    session.execute(insert(orders).values(id=order_id, customer=customer, total=event.total))
    Outbox(session).add(event)


@handles(OrderCreated)
def send_confirmation(ctx: HandlerContext, order: OrderCreated) -> None:
    ctx.session.execute(
        insert(confirmations).values(order_id=order.order_id, recipient=order.customer)
    )


@handles(OrderCreated)
def prepare_picking_list(ctx: HandlerContext, order: OrderCreated) -> None:
    items = sum(line.quantity for line in order.lines)
    ctx.session.execute(insert(picking_lists).values(order_id=order.order_id, items=items))


@handles(OrderCreated)
def award_points(ctx: HandlerContext, order: OrderCreated) -> None:
    """One point per whole unit of money spent."""
    points = int(order.total)
    known = ctx.session.execute(
        select(reward_points.c.points).where(reward_points.c.customer == order.customer)
    ).first()
    if known is None:
        ctx.session.execute(insert(reward_points).values(customer=order.customer, points=points))
    else:
        ctx.session.execute(
            update(reward_points)
            .where(reward_points.c.customer == order.customer)
            .values(points=reward_points.c.points + points)
        )


def apps() -> list[App]:
    return [
        App("shop", inputs=[OrderCreated]),  # the checkout page (place_order)
        App("email", handlers=[send_confirmation]),
        App("warehouse", handlers=[prepare_picking_list]),
        App("rewards", handlers=[award_points]),
    ]
