"""Saga rows in a batch (`SagaRuntime.begin_batch`, what a worker with `--batch-size` uses): read
and locked together, written back together at the commit, and still safe against concurrent
transactions."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, event, select, update
from sqlalchemy.orm import Session

from outbox import Event
from sagas import BatchSpoiled, ConcurrencyConflict, Saga, SagaContext, SagaRuntime, Timeout, on
from sagas.tables import saga_instances, saga_journal
from tests.pg_helpers import InThread, wait_until_blocked
from tests.saga_fixtures import Counter, CounterOpened, Ping


@pytest.fixture
def runtime(engine: Engine) -> SagaRuntime:
    runtime = SagaRuntime([Counter])
    with Session(engine) as session, session.begin():
        for key in ("a", "b", "c"):
            runtime.handle(session, CounterOpened(key=key))
    return runtime


def _pings(engine: Engine, runtime: SagaRuntime) -> dict[str, tuple[int, int]]:
    """Each counter's (pings, version)."""
    with Session(engine) as session:
        counters = [runtime.load(session, Counter, key) for key in ("a", "b", "c")]
    return {c.correlation_id: (c.data.pings, c.version) for c in counters if c is not None}


class Statements:
    """The SQL statements sent on an engine, one entry per execute (an executemany is one)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sent: list[str] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(" ".join(statement.split()[:3]))

    def count(self, start: str) -> int:
        return sum(statement.startswith(start) for statement in self.sent)


def test_a_batch_reads_each_saga_once_and_writes_them_back_in_one_statement(
    engine: Engine, runtime: SagaRuntime
) -> None:
    """Seven pings for three counters: one locked read, one update and one journal insert for
    the lot, and every ping counted, in order, with the versions one at a time would give."""
    pings = [Ping(key=key) for key in "aabbcab"]
    with Statements(engine) as statements, Session(engine) as session, session.begin():
        runtime.begin_batch(session, pings)
        for ping in pings:
            runtime.handle(session, ping)
    assert 1 == statements.count("SELECT sagabox_saga_instances.id,")
    assert 1 == statements.count("UPDATE sagabox_saga_instances SET")
    assert 1 == statements.count("INSERT INTO sagabox_saga_journal")
    assert {"a": (3, 4), "b": (3, 4), "c": (1, 2)} == _pings(engine, runtime)
    with engine.connect() as connection:
        lines = connection.execute(
            select(saga_journal.c.correlation_id, saga_journal.c.version)
            .where(saga_journal.c.trigger == Ping.type_name)
            .order_by(saga_journal.c.id)
        ).all()
    assert [("a", 2), ("a", 3), ("b", 2), ("b", 3), ("c", 2), ("a", 4), ("b", 4)] == lines


class NagOpened(Event, type="sagatest.batch.NagOpened"):
    key: str


class NagNow(Event, type="sagatest.batch.NagNow"):
    key: str


class NagLater(Timeout, type="sagatest.batch.NagLater"):
    key: str


class Nags(BaseModel):
    nags: int = 0
    said: dict[str, list[str | None]] = {}


class Nagger(Saga[Nags], name="sagatest.batch.Nagger"):
    """Counts nags; the saga keyed "later" also schedules a reminder."""

    states = ["new", "open"]
    transitions = [
        on(NagOpened, "new", "open"),
        on(NagNow, "open", None, after="nag"),
        on(NagLater, "open", None),
    ]
    correlation = {NagOpened: "key", NagNow: "key", NagLater: "key"}

    def nag(self, ctx: SagaContext, message: NagNow) -> None:
        self.data.nags += 1
        self.data.said[message.key] = ['it\'s "quoted", {braced}', None]
        if message.key == "later":
            ctx.schedule("later", NagLater(key=message.key), after=timedelta(hours=1))


def test_a_batch_writes_the_columns_a_single_step_writes(engine: Engine) -> None:
    """Data, pending timeouts (SQL NULL when there are none) and their due time come back from
    a batch's write-back as from one step's save."""
    runtime = SagaRuntime([Nagger], endpoint="naggers")
    with Session(engine) as session, session.begin():
        for key in ("now", "later", "alone"):
            runtime.handle(session, NagOpened(key=key))
    with Session(engine) as session, session.begin():
        runtime.handle(session, NagNow(key="alone"))  # unbatched, for comparison
    nags = [NagNow(key="now"), NagNow(key="later")]
    with Session(engine) as session, session.begin():
        runtime.begin_batch(session, nags)
        for nag in nags:
            runtime.handle(session, nag)
    columns = saga_instances.c
    with engine.connect() as connection:
        rows = {
            row.correlation_id: row
            for row in connection.execute(
                select(
                    columns.correlation_id, columns.data, columns.version, columns.timeouts,
                    columns.timeouts.is_(None).label("no_timeouts"), columns.next_timeout_at,
                )
            )
        }  # fmt: skip
    alone, now, later = rows["alone"], rows["now"], rows["later"]
    assert (alone.data["nags"], alone.version, alone.no_timeouts) == (1, 2, True)
    assert (now.data["nags"], now.version, now.no_timeouts) == (1, 2, True)
    assert {"now": ['it\'s "quoted", {braced}', None]} == now.data["said"]
    assert now.next_timeout_at is None
    assert (later.data["nags"], later.version, later.no_timeouts) == (1, 2, False)
    with Session(engine) as session:
        saga = runtime.load(session, Nagger, "later")
    assert saga is not None
    assert ["later"] == list(saga.timeouts)
    assert later.next_timeout_at == saga.timeouts["later"].due_at
    assert later.next_timeout_at.tzinfo is not None


def test_a_rolled_back_batch_writes_nothing_and_the_next_transaction_is_not_batched(
    engine: Engine, runtime: SagaRuntime
) -> None:
    def failing_batch(session: Session) -> None:
        with session.begin():
            runtime.begin_batch(session, [Ping(key="a")])
            runtime.handle(session, Ping(key="a"))
            raise RuntimeError("the handler after it failed")

    with Session(engine) as session:
        with pytest.raises(RuntimeError):
            failing_batch(session)
        assert {"a": (0, 1), "b": (0, 1), "c": (0, 1)} == _pings(engine, runtime)
        with Statements(engine) as statements, session.begin():
            runtime.handle(session, Ping(key="b"))
        # Written at once (on PostgreSQL in the one-statement step, `sagas.step_sql`).
        assert 1 == statements.count("UPDATE sagabox_saga_instances SET") + statements.count(
            "WITH u AS"
        )
    assert (1, 2) == _pings(engine, runtime)["b"]


def test_a_deferred_write_whose_row_changed_meanwhile_fails_the_commit(
    engine: Engine, runtime: SagaRuntime
) -> None:
    """The locks (PostgreSQL) and BEGIN IMMEDIATE (SQLite) keep other writers out of a batch's
    rows; should a row still change under it, the version check fails the commit and the batch
    changes nothing. Staged by moving a version behind the batch's back."""
    moved = (
        update(saga_instances)
        .where(saga_instances.c.correlation_id == "a")
        .values(version=saga_instances.c.version + 10)
    )

    def batch_behind_whose_back_a_row_moves() -> None:
        with Session(engine) as session, session.begin():
            runtime.begin_batch(session, [Ping(key="a"), Ping(key="b")])
            runtime.handle(session, Ping(key="a"))
            runtime.handle(session, Ping(key="b"))
            session.execute(moved)

    with pytest.raises(ConcurrencyConflict, match="1 of the 2 sagas"):
        batch_behind_whose_back_a_row_moves()
    assert {"a": (0, 1), "b": (0, 1), "c": (0, 1)} == _pings(engine, runtime)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_batches_sharing_sagas_wait_for_each_other_and_lose_nothing(
    engine: Engine, runtime: SagaRuntime
) -> None:
    """A batch holds the counters it read; a second batch over the same counters, listed the
    other way round, waits for its commit, then counts on top of it: no conflict, no lost
    ping."""
    first = [Ping(key="a"), Ping(key="b")]
    second = [Ping(key="b"), Ping(key="a"), Ping(key="c")]

    def handle_batch(connection: Connection) -> None:
        with Session(bind=connection) as session:
            runtime.begin_batch(session, second)
            for ping in second:
                runtime.handle(session, ping)
            session.commit()

    with Session(engine) as session, session.begin():
        runtime.begin_batch(session, first)
        for ping in first:
            runtime.handle(session, ping)
        other = InThread(engine, "second-batch", handle_batch).start()
        wait_until_blocked(engine, "second-batch")
    other.join()
    assert other.error is None
    assert {"a": (2, 3), "b": (2, 3), "c": (1, 2)} == _pings(engine, runtime)


def test_a_savepoint_released_inside_a_batch_does_not_write_it_back_early(
    engine: Engine, runtime: SagaRuntime
) -> None:
    """A handler may use savepoints of its own: releasing one is not the commit, so the batch's
    writes still go out once, at the end."""
    with Statements(engine) as statements, Session(engine) as session, session.begin():
        runtime.begin_batch(session, [Ping(key="a"), Ping(key="a")])
        with session.begin_nested():
            runtime.handle(session, Ping(key="a"))
        runtime.handle(session, Ping(key="a"))
    assert 1 == statements.count("UPDATE sagabox_saga_instances SET")
    assert (2, 3) == _pings(engine, runtime)["a"]


def test_a_savepoint_rolled_back_without_saga_changes_leaves_the_batch_alone(
    engine: Engine, runtime: SagaRuntime
) -> None:
    with Session(engine) as session, session.begin():
        runtime.begin_batch(session, [Ping(key="a")])
        runtime.handle(session, Ping(key="a"))
        savepoint = session.begin_nested()
        session.execute(update(saga_journal).values(outcome=saga_journal.c.outcome))
        savepoint.rollback()
    assert (1, 2) == _pings(engine, runtime)["a"]


def test_a_savepoint_rolled_back_after_saga_changes_spoils_the_batch(
    engine: Engine, runtime: SagaRuntime
) -> None:
    """The database undid the savepoint, but the instance in the batch's memory still holds
    its change: committing would write it. The commit is refused and nothing is written."""

    def batch_with_an_undone_savepoint() -> None:
        with Session(engine) as session, session.begin():
            runtime.begin_batch(session, [Ping(key="a"), Ping(key="b")])
            savepoint = session.begin_nested()
            runtime.handle(session, Ping(key="a"))
            savepoint.rollback()
            runtime.handle(session, Ping(key="b"))

    with pytest.raises(BatchSpoiled, match="a savepoint that changed sagas rolled back"):
        batch_with_an_undone_savepoint()
    assert {"a": (0, 1), "b": (0, 1), "c": (0, 1)} == _pings(engine, runtime)


class Grumpy(Counter, name="sagatest.Grumpy"):
    """Counts a ping, then fails."""

    def count(self, ctx: SagaContext, message: Ping) -> None:
        self.data.pings += 1
        raise RuntimeError("changed my data, then failed")


def test_a_saga_failing_mid_transition_spoils_the_batch_even_if_the_error_is_caught(
    engine: Engine,
) -> None:
    """The action raised after changing the instance the batch keeps in memory; a caller that
    swallows the error cannot commit the half-made change."""
    runtime = SagaRuntime([Grumpy])
    with Session(engine) as session, session.begin():
        runtime.handle(session, CounterOpened(key="g"))

    def batch_that_swallows_the_error() -> None:
        with Session(engine) as session, session.begin():
            runtime.begin_batch(session, [Ping(key="g")])
            with contextlib.suppress(RuntimeError):
                runtime.handle(session, Ping(key="g"))

    with pytest.raises(BatchSpoiled, match=r"RuntimeError while sagatest\.Grumpy"):
        batch_that_swallows_the_error()
    with Session(engine) as session:
        grumpy = runtime.load(session, Grumpy, "g")
    assert grumpy is not None
    assert (0, 1) == (grumpy.data.pings, grumpy.version)
