"""The benchmark's endpoint: one saga step per message, the shape pgbench measures in (a).

Each `Step` loads a counter saga, moves it (an internal transition that bumps its data and
publishes a `Counted` event), saves it version-checked and journals it, and the worker records the
message in the inbox: insert an inbox row, read and update a saga row, insert a journal line and an
outbox row.
"""

from __future__ import annotations

import os

from pydantic import BaseModel
from sqlalchemy import text

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


class Begin(Event, type="bench.chain.Begin"):
    """Starts a three-step chain (section (m)); `started` is the driver's clock at the start."""

    key: str
    started: float


class Advanced(Event, type="bench.chain.Advanced"):
    """A chain's step is done: the next one runs on its own delivery, as a durable step."""

    key: str


class ChainData(BaseModel):
    started: float = 0.0


# One business-row update per step; the last one stamps the chain's start and end, which the
# bench reads back, as the DBOS peer's workflows stamp theirs.
ADVANCE_ROW = text(
    "UPDATE bench_chain SET steps = steps + 1, "
    "started_at = CASE WHEN :last THEN to_timestamp(:started) END, "
    "done_at = CASE WHEN :last THEN clock_timestamp() END WHERE id = :id"
)


class Chain(Saga[ChainData], name="bench.Chain"):
    """Three durable steps, each a transition on its own message: the peer's 3-step workflow."""

    states = ["new", "one", "two", {"name": "done", "final": True}]
    transitions = [
        on(Begin, "new", "one", after="begin"),
        on(Advanced, "one", "two", after="advance"),
        on(Advanced, "two", "done", after="advance"),
    ]
    correlation = {Begin: "key", Advanced: "key"}

    def begin(self, ctx: SagaContext, message: Begin) -> None:
        self.data.started = message.started
        self.advance(ctx, message)

    def advance(self, ctx: SagaContext, message: Begin | Advanced) -> None:
        last = self.state_name == "done"
        assert ctx.session is not None  # the worker hands its transaction to every step
        ctx.session.execute(
            ADVANCE_ROW, {"id": message.key, "last": last, "started": self.data.started}
        )
        if not last:
            ctx.publish(Advanced(key=message.key))


chain_app = App(
    os.environ.get("BENCH_CHAIN_ENDPOINT", "bench-chain"),
    sagas=[Chain],
    inputs=[Begin, Advanced],
    exchange=os.environ.get("BENCH_EXCHANGE", DEFAULT_EXCHANGE),
)
