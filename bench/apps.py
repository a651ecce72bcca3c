"""The benchmark's endpoint: one saga step per message, the shape pgbench measures in (a).

Each `Step` loads a counter saga, moves it (an internal transition that bumps its data), saves it
version-checked, journals it, and the worker records the message in the inbox: update a saga
row, insert an outbox-shaped row (the journal), insert an inbox row.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from outbox import Event
from relay.broker import DEFAULT_EXCHANGE
from sagabox import App
from sagas import Saga, SagaContext, on


class Opened(Event, type="bench.Opened"):
    key: str


class Step(Event, type="bench.Step"):
    key: str


class Tally(BaseModel):
    steps: int = 0


class Counter(Saga[Tally], name="bench.Counter"):
    states = ["new", "open"]
    transitions = [on(Opened, "new", "open"), on(Step, "open", None, after="count")]
    correlation = {Opened: "key", Step: "key"}

    def count(self, ctx: SagaContext, step: Step) -> None:
        self.data.steps += 1


app = App(
    os.environ.get("BENCH_ENDPOINT", "bench"),
    sagas=[Counter],
    inputs=[Opened, Step],
    exchange=os.environ.get("BENCH_EXCHANGE", DEFAULT_EXCHANGE),
)
