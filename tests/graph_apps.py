"""Small systems for the `sagabox graph` tests: a cycle, a chain, and loose ends."""

from __future__ import annotations

from outbox import Command, Event, HandlerContext, handles
from sagabox import App


class Ping(Event, type="graphtest.Ping"):
    n: int


class Pong(Event, type="graphtest.Pong"):
    n: int


@handles(Ping)
def answer_ping(ctx: HandlerContext, ping: Ping) -> None:
    ctx.publish(Pong(n=ping.n + 1))


@handles(Pong)
def answer_pong(ctx: HandlerContext, pong: Pong) -> None:
    ctx.publish(Ping(n=pong.n + 1))


def cyclic() -> list[App]:
    """Two endpoints whose handlers answer each other forever."""
    return [
        App("left", handlers=[answer_ping], inputs=[Ping]),
        App("right", handlers=[answer_pong]),
    ]


class Step1(Event, type="graphtest.Step1"):
    pass


class Step2(Event, type="graphtest.Step2"):
    pass


class Step3(Event, type="graphtest.Step3"):
    pass


class Step4(Event, type="graphtest.Step4"):
    pass


@handles(Step1)
def first(ctx: HandlerContext, _event: Step1) -> None:
    ctx.publish(Step2())


@handles(Step2)
def second(ctx: HandlerContext, _event: Step2) -> None:
    ctx.publish(Step3())


@handles(Step3)
def third(ctx: HandlerContext, _event: Step3) -> None:
    ctx.publish(Step4())


@handles(Step4)
def fourth(ctx: HandlerContext, _event: Step4) -> None:
    """The end of the line."""


def chained() -> list[App]:
    """A workflow spread over four single-consumer events (the payment chain of seed 002)."""
    return [
        App("a", handlers=[first], inputs=[Step1]),
        App("b", handlers=[second]),
        App("c", handlers=[third]),
        App("d", handlers=[fourth]),
    ]


class Bill(Command, type="graphtest.Bill"):
    pass


class Refund(Command, type="graphtest.Refund"):
    pass


@handles(Step1)
def bill(ctx: HandlerContext, _event: Step1) -> None:
    ctx.send(Bill(), to="billing")


@handles(Refund)
def refund(ctx: HandlerContext, _command: Refund) -> None:
    """Nobody ever sends Refund."""


def loose_ends() -> list[App]:
    return [App("shop", handlers=[bill], inputs=[Step1]), App("billing", handlers=[refund])]
