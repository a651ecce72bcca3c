"""A saga step or start that emits thousands of messages (a fan-out) writes every one of them, in
emission order, on both backends: PostgreSQL's one-statement step and create must not outgrow the
65,535 bound parameters a statement may carry."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from outbox import Command, Event
from outbox.tables import outbox_messages
from sagas import ConcurrencyConflict, Saga, SagaContext, SagaRuntime, on, step_sql
from sagas.stepping import apply_step
from sagas.tables import saga_instances

#: 9 parameters an outbox row: 7,300 rows are past PostgreSQL's limit of 65,535 per statement.
FAN_OUT = 7_300


class FanOpened(Event, type="fanout.Opened"):
    key: str
    n: int = 0


class FanOut(Event, type="fanout.FanOut"):
    key: str
    n: int


class Ping(Command, type="fanout.Ping"):
    key: str
    i: int


class Fan(BaseModel):
    sent: int = 0


class Fanner(Saga[Fan], name="fanout.Fanner"):
    states = ["new", "open"]
    transitions = [
        on(FanOpened, "new", "open", after="fan"),
        on(FanOut, "open", None, after="fan"),
    ]
    correlation = {FanOpened: "key", FanOut: "key"}

    def fan(self, ctx: SagaContext, message: FanOpened | FanOut) -> None:
        for i in range(message.n):
            ctx.send(Ping(key=message.key, i=i), to="pinged")
        self.data.sent += message.n


def _pings(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        payloads = connection.execute(
            select(outbox_messages.c.payload)
            .where(outbox_messages.c.type == Ping.type_name)
            .order_by(outbox_messages.c.id)
        ).scalars()
        return [Ping.model_validate_json(p).i for p in payloads]


@pytest.mark.parametrize("start", [False, True], ids=["step", "start"])
def test_a_step_that_sends_thousands_of_commands_writes_them_all_in_order(
    engine: Engine, start: bool
) -> None:
    runtime = SagaRuntime([Fanner], endpoint="fanout")
    with Session(engine) as session, session.begin():
        runtime.handle(session, FanOpened(key="k", n=FAN_OUT if start else 0))
    if not start:
        with Session(engine) as session, session.begin():
            runtime.handle(session, FanOut(key="k", n=FAN_OUT))
    assert list(range(FAN_OUT)) == _pings(engine)


def test_a_stale_step_writes_none_of_a_fan_out(engine: Engine) -> None:
    """The rows a fan-out writes after the step's statement go in only if the step saved."""
    runtime = SagaRuntime([Fanner], endpoint="fanout")
    with Session(engine) as session, session.begin():
        runtime.handle(session, FanOpened(key="k"))
    with Session(engine) as session:
        saga = runtime.load(session, Fanner, "k")
    assert saga is not None
    with engine.begin() as other:
        other.execute(update(saga_instances).values(version=saga_instances.c.version + 1))
    with Session(engine) as session, session.begin(), pytest.raises(ConcurrencyConflict):
        apply_step(session, saga, FanOut(key="k", n=step_sql.MAX_ROWS + 5), runtime.endpoint)
    assert [] == _pings(engine)
