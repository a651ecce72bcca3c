"""An unbatched saga step's writes (`sagas.step_sql`): on PostgreSQL the update, the journal line
and the emitted messages go in one statement, and a stale version still writes none of them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from outbox.tables import outbox_messages
from sagas import ConcurrencyConflict, SagaRuntime
from sagas.stepping import apply_step
from sagas.tables import saga_instances, saga_journal
from tests.test_batch_outbox import Arm, Disarm, Expired, Tick, Ticked, Ticker, TickOpened
from tests.test_saga_batches import Statements


def _opened(engine: Engine) -> SagaRuntime:
    runtime = SagaRuntime([Ticker], endpoint="stepsql")
    with Session(engine) as session, session.begin():
        runtime.handle(session, TickOpened(key="a"))
    return runtime


def _count(engine: Engine, table: object, **where: object) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    for column, value in where.items():
        query = query.where(getattr(table, "c")[column] == value)  # noqa: B009
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_a_step_sends_its_writes_in_one_statement_on_postgresql(
    engine: Engine, backend: str
) -> None:
    """A tick (update, journal line, one event): one statement on PostgreSQL, three on SQLite
    (which runs no data-modifying CTE); the same rows either way."""
    runtime = _opened(engine)
    with Statements(engine) as statements, Session(engine) as session, session.begin():
        runtime.handle(session, Tick(key="a", n=1))
    separate = sum(
        statements.count(start)
        for start in (
            "UPDATE sagabox_saga_instances SET",
            "INSERT INTO sagabox_saga_journal",
            "INSERT INTO sagabox_outbox_messages",
        )
    )
    assert ((1, 0) if backend == "postgresql" else (0, 3)) == (
        statements.count("WITH u AS"),
        separate,
    )
    with Session(engine) as session:
        saga = runtime.load(session, Ticker, "a")
    assert saga is not None
    assert (1, 2) == (saga.data.ticks, saga.version)
    assert 1 == _count(engine, saga_journal, trigger=Tick.type_name, version=2)
    assert 1 == _count(engine, outbox_messages, type=Ticked.type_name, partition_key="a")
    with engine.connect() as connection:
        timeouts = connection.execute(select(saga_instances.c.timeouts)).scalar_one()
    assert timeouts is None  # SQL NULL, not JSON null: "stuck" queries test for it


def test_a_step_on_a_stale_version_writes_nothing_and_raises(engine: Engine) -> None:
    """Another transaction bumped the version between the load and the save: the step raises
    a concurrency conflict, and neither its journal line nor its message is written."""
    runtime = _opened(engine)
    with Session(engine) as session:
        saga = runtime.load(session, Ticker, "a")
    assert saga is not None
    with engine.begin() as other:
        other.execute(update(saga_instances).values(version=saga_instances.c.version + 1))
    with Session(engine) as session, session.begin(), pytest.raises(ConcurrencyConflict):
        apply_step(session, saga, Tick(key="a", n=1), runtime.endpoint)
    assert 0 == _count(engine, saga_journal, trigger=Tick.type_name)
    assert 0 == _count(engine, outbox_messages, type=Ticked.type_name)


def test_timeouts_scheduled_and_cancelled_step_by_step_keep_the_outbox_equal_to_them(
    engine: Engine,
) -> None:
    """Arm (a timeout row), disarm (deleted), arm again: one pending timeout, one row."""
    runtime = _opened(engine)
    for message in (Arm(key="a"), Disarm(key="a"), Arm(key="a")):
        with Session(engine) as session, session.begin():
            runtime.handle(session, message)
    with Session(engine) as session:
        saga = runtime.load(session, Ticker, "a")
    assert saga is not None
    assert ["expiry"] == list(saga.timeouts)
    with engine.connect() as connection:
        due = connection.execute(
            select(outbox_messages.c.message_id, outbox_messages.c.available_at).where(
                outbox_messages.c.type == Expired.type_name
            )
        ).all()
    assert [saga.timeouts["expiry"].message_id] == [row.message_id for row in due]
    assert due[0].available_at > saga.updated_at + timedelta(minutes=59)
