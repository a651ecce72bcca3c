"""Concurrent transactions on one saga (real PostgreSQL): one creation wins, no update is lost."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from sagas import ConcurrencyConflict, SagaRuntime
from sagas.tables import saga_instances
from tests.pg_helpers import InThread, wait_until_blocked
from tests.saga_fixtures import (
    ChecksJoin,
    Counter,
    CounterOpened,
    CreditChecked,
    CriminalChecked,
    Ping,
)

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _with_retry(engine: Engine, runtime: SagaRuntime, message: Any, attempts: int = 3) -> int:
    """Handle `message` as the consumer worker does: retry the whole transaction on conflict.
    Returns how many attempts it took."""
    for attempt in range(1, attempts + 1):
        try:
            with Session(engine) as session, session.begin():
                runtime.handle(session, message)
            return attempt
        except ConcurrencyConflict:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _race(engine: Engine, runtime: SagaRuntime, first: Any, second: Any) -> InThread:
    """Run `first` in an open transaction, start `second` on another thread, wait until it
    blocks on the first one's row, then commit the first."""
    with engine.connect() as connection:
        transaction = connection.begin()
        runtime.handle(connection, first)
        other = InThread(engine, "saga-second", lambda c: runtime.handle(c, second)).start()
        wait_until_blocked(engine, "saga-second")
        transaction.commit()
    other.join()
    return other


def test_racing_creations_make_one_saga_and_the_loser_succeeds_on_retry(engine: Engine) -> None:
    """Two messages that may each start the saga arrive at once: one creates it, the other gets
    ConcurrencyConflict, and its retry continues the saga that now exists."""
    runtime = SagaRuntime([ChecksJoin])
    credit = CreditChecked(loan_id="L-1", ok=True)
    criminal = CriminalChecked(loan_id="L-1", clean=True)
    loser = _race(engine, runtime, credit, criminal)
    assert isinstance(loser.error, ConcurrencyConflict)
    assert "created by another transaction" in str(loser.error)

    assert 1 == _with_retry(engine, runtime, criminal)
    with Session(engine) as session:
        join = runtime.load(session, ChecksJoin, "L-1")
        count = session.scalar(select(func.count()).select_from(saga_instances))
    assert join is not None
    assert (1, "both_done", 2, True, True) == (
        count,
        join.state_name,
        join.version,
        join.data.credit,
        join.data.criminal,
    )


def test_racing_updates_lose_nothing(engine: Engine) -> None:
    """Two pings for one saga at once: the second sees a stale version, retries, and the count
    ends at 2: no lost update."""
    runtime = SagaRuntime([Counter])
    _with_retry(engine, runtime, CounterOpened(key="k"))
    loser = _race(engine, runtime, Ping(key="k"), second := Ping(key="k"))
    assert isinstance(loser.error, ConcurrencyConflict)
    assert "changed by another transaction" in str(loser.error)

    _with_retry(engine, runtime, second)
    with Session(engine) as session:
        counter = runtime.load(session, Counter, "k")
    assert counter is not None
    assert (2, 3) == (counter.data.pings, counter.version)


def test_many_concurrent_pings_all_count(engine: Engine) -> None:
    """Eight threads ping one saga 10 times each, retrying conflicts: all 80 are counted."""
    runtime = SagaRuntime([Counter])
    _with_retry(engine, runtime, CounterOpened(key="busy"))

    def ping_ten(_connection: Connection) -> int:
        return sum(_with_retry(engine, runtime, Ping(key="busy"), attempts=50) for _ in range(10))

    workers = [InThread(engine, f"pinger-{n}", ping_ten).start() for n in range(8)]
    for worker in workers:
        worker.join()
    assert [None] * 8 == [w.error for w in workers]
    with Session(engine) as session:
        counter = runtime.load(session, Counter, "busy")
    assert counter is not None
    assert 80 == counter.data.pings
