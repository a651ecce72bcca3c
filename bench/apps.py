"""The benchmark's endpoint: one saga step per message, the shape pgbench measures in (a).

Each `Step` loads a counter saga, moves it (an internal transition that bumps its data and
publishes a `Counted` event), saves it version-checked and journals it, and the worker records the
message in the inbox: insert an inbox row, read and update a saga row, insert a journal line and an
outbox row.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from outbox import Event, HandlerContext, handles
from relay.broker import DEFAULT_EXCHANGE
from sagabox import App
from sagas import Saga, SagaContext, on


class Opened(Event, type="bench.Opened"):
    key: str


class Step(Event, type="bench.Step"):
    key: str


class Counted(Event, type="bench.Counted"):
    key: str
    steps: int


class Tally(BaseModel):
    steps: int = 0


class Counter(Saga[Tally], name="bench.Counter"):
    states = ["new", "open"]
    transitions = [on(Opened, "new", "open"), on(Step, "open", None, after="count")]
    correlation = {Opened: "key", Step: "key"}

    def count(self, ctx: SagaContext, step: Step) -> None:
        self.data.steps += 1
        ctx.publish(Counted(key=step.key, steps=self.data.steps))


app = App(
    os.environ.get("BENCH_ENDPOINT", "bench"),
    sagas=[Counter],
    inputs=[Opened, Step],
    exchange=os.environ.get("BENCH_EXCHANGE", DEFAULT_EXCHANGE),
)


class Job(Event, type="bench.Job"):
    """The peer comparison's unit of work: handled by a handler that does nothing."""

    key: str


@handles(Job)
def do_nothing(ctx: HandlerContext, job: Job) -> None:
    """The comparison with procrastinate is the machinery around the work, not the work."""


peer_app = App(
    os.environ.get("BENCH_PEER_ENDPOINT", "bench-peer"),
    handlers=[do_nothing],
    inputs=[Job],
    exchange=os.environ.get("BENCH_EXCHANGE", DEFAULT_EXCHANGE),
)
