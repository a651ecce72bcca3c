"""The soak's system: one endpoint whose saga charges, then ships, each order once.

Every effect is a row in `soak_effects` with no unique key: only the inbox stands between a
duplicate delivery and a second row, so the soak's final count checks exactly-once for real.
"""

from __future__ import annotations

import os

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from outbox import Command, Event, HandlerContext, handles
from relay.broker import DEFAULT_EXCHANGE
from sagabox import App
from sagas import Saga, SagaContext, on

business = MetaData()
effects = Table(
    "soak_effects",
    business,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("order_id", String(40), nullable=False),
    Column("kind", String(10), nullable=False),
)

ENDPOINT = os.environ.get("SOAK_ENDPOINT", "soak")


class OrderStarted(Event, type="soak.OrderStarted"):
    order_id: str


class Charge(Command, type="soak.Charge"):
    order_id: str


class Charged(Event, type="soak.Charged"):
    order_id: str


class Ship(Command, type="soak.Ship"):
    order_id: str


class Shipped(Event, type="soak.Shipped"):
    order_id: str


class Nothing(BaseModel):
    pass


class SoakOrder(Saga[Nothing], name="soak.Order"):
    states = ["new", "charging", "shipping", {"name": "done", "final": True}]
    transitions = [
        on(OrderStarted, "new", "charging", after="charge"),
        on(Charged, "charging", "shipping", after="ship"),
        on(Shipped, "shipping", "done"),
    ]
    correlation = {OrderStarted: "order_id", Charged: "order_id", Shipped: "order_id"}

    def charge(self, ctx: SagaContext, started: OrderStarted) -> None:
        ctx.send(Charge(order_id=started.order_id), to=ENDPOINT)

    def ship(self, ctx: SagaContext, charged: Charged) -> None:
        ctx.send(Ship(order_id=charged.order_id), to=ENDPOINT)


@handles(Charge)
def charge(ctx: HandlerContext, command: Charge) -> None:
    ctx.session.execute(insert(effects).values(order_id=command.order_id, kind="charge"))
    ctx.publish(Charged(order_id=command.order_id))


@handles(Ship)
def ship(ctx: HandlerContext, command: Ship) -> None:
    ctx.session.execute(insert(effects).values(order_id=command.order_id, kind="ship"))
    ctx.publish(Shipped(order_id=command.order_id))


app = App(
    ENDPOINT,
    sagas=[SoakOrder],
    handlers=[charge, ship],
    inputs=[OrderStarted],
    exchange=os.environ.get("SOAK_EXCHANGE", DEFAULT_EXCHANGE),
)
