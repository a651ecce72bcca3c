"""The messages a batch's sagas emit (`sagas.batch`): held until the commit and inserted in one
go, in the order they were emitted, and a timeout the batch schedules then cancels never written."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox import Event
from outbox.tables import outbox_messages
from sagas import Saga, SagaContext, SagaRuntime, Timeout, on
from tests.test_saga_batches import Statements


class TickOpened(Event, type="batchoutbox.Opened"):
    key: str


class Tick(Event, type="batchoutbox.Tick"):
    key: str
    n: int


class Ticked(Event, type="batchoutbox.Ticked"):
    key: str
    n: int


class Arm(Event, type="batchoutbox.Arm"):
    key: str


class Disarm(Event, type="batchoutbox.Disarm"):
    key: str


class Expired(Timeout, type="batchoutbox.Expired"):
    key: str


class Tally(BaseModel):
    ticks: int = 0


class Ticker(Saga[Tally], name="batchoutbox.Ticker"):
    states = ["new", "open", "armed"]
    transitions = [
        on(TickOpened, "new", "open"),
        on(Tick, "open", None, after="tick"),
        on(Arm, "open", "armed", after="arm"),
        on(Disarm, "armed", "open", after="disarm"),
        on(Expired, "armed", "open"),
    ]
    correlation = {TickOpened: "key", Tick: "key", Arm: "key", Disarm: "key", Expired: "key"}

    def tick(self, ctx: SagaContext, message: Tick) -> None:
        self.data.ticks += 1
        ctx.publish(Ticked(key=message.key, n=message.n))

    def arm(self, ctx: SagaContext, message: Arm) -> None:
        ctx.schedule("expiry", Expired(key=message.key), after=timedelta(hours=1))

    def disarm(self, ctx: SagaContext, message: Disarm) -> None:
        ctx.cancel("expiry")


def _runtime(engine: Engine) -> SagaRuntime:
    runtime = SagaRuntime([Ticker], endpoint="batchoutbox")
    with Session(engine) as session, session.begin():
        for key in ("a", "b"):
            runtime.handle(session, TickOpened(key=key))
    return runtime


def _rows(engine: Engine, type_name: str) -> list[tuple[str | None, str]]:
    with engine.connect() as connection:
        return [
            (row.partition_key, row.payload)
            for row in connection.execute(
                select(outbox_messages.c.partition_key, outbox_messages.c.payload)
                .where(outbox_messages.c.type == type_name)
                .order_by(outbox_messages.c.id)
            )
        ]


def test_a_batch_inserts_what_its_sagas_emit_together_and_in_order(engine: Engine) -> None:
    """Six ticks for two sagas: one outbox insert for the lot at the commit, ids in the order
    the ticks were handled."""
    runtime = _runtime(engine)
    ticks = [Tick(key=key, n=n) for n, key in enumerate("abbaab")]
    with Statements(engine) as statements, Session(engine) as session, session.begin():
        runtime.begin_batch(session, ticks)
        for tick in ticks:
            runtime.handle(session, tick)
        assert 0 == statements.count("INSERT INTO sagabox_outbox_messages")  # not yet
    assert 1 == statements.count("INSERT INTO sagabox_outbox_messages")
    rows = _rows(engine, Ticked.type_name)
    emitted = [Ticked.model_validate_json(payload) for _, payload in rows]
    assert [(t.key, t.n) for t in ticks] == [(t.key, t.n) for t in emitted]
    assert ["a", "b", "b", "a", "a", "b"] == [key for key, _ in rows]


def test_a_timeout_scheduled_and_cancelled_in_one_batch_leaves_no_outbox_row(
    engine: Engine,
) -> None:
    """Arm then disarm in the same batch: the pending set is empty, and so is the outbox."""
    runtime = _runtime(engine)
    messages = [Arm(key="a"), Arm(key="b"), Disarm(key="a")]
    with Session(engine) as session, session.begin():
        runtime.begin_batch(session, messages)
        for message in messages:
            runtime.handle(session, message)
    with Session(engine) as session:
        a, b = runtime.load(session, Ticker, "a"), runtime.load(session, Ticker, "b")
    assert a is not None
    assert b is not None
    assert ({}, ["expiry"]) == (a.timeouts, list(b.timeouts))
    expiries = [
        (key, Expired.model_validate_json(payload))
        for key, payload in _rows(engine, Expired.type_name)
    ]
    assert [("b", "b", "expiry")] == [(k, e.key, e.timeout) for k, e in expiries]
