"""Retention from the command line: `sagabox sagas prune` and `sagabox dlq prune`, batch by batch,
keeping what is younger than the retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from outbox import clock
from outbox.tables import dead_letters
from sagabox.cli import main
from sagas import SagaRuntime, prune_finished, prune_journal
from sagas.tables import saga_instances, saga_journal
from tests.subscription_app import Cancelled, Completed, Started, SubscriptionSaga

runtime = SagaRuntime([SubscriptionSaga], endpoint="subs")


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def test_sagas_prune_removes_old_tombstones_and_orphan_lines_in_batches(
    engine: Engine,
    database_url: str,
    frozen_clock: FrozenDateTimeFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three finished sagas and three lines of unknown ones, pruned two at a time; a live saga
    and everything younger than the retention stay."""
    with Session(engine) as session, session.begin():
        for n in range(3):
            runtime.handle(session, Started(sub_id=f"old-{n}"))
            runtime.handle(session, Cancelled(sub_id=f"old-{n}"))
            runtime.handle(session, Completed(sub_id=f"ghost-{n}"))
        runtime.handle(session, Started(sub_id="live"))
    frozen_clock.tick(timedelta(days=31))
    with Session(engine) as session, session.begin():
        runtime.handle(session, Completed(sub_id="ghost-young"))
    args = ["sagas", "prune", "--db", database_url, "--older-than", "30d", "--batch-size", "2"]
    assert 0 == main(args)
    assert "pruned 3 finished sagas, 3 journal lines" in capsys.readouterr().out
    with engine.connect() as connection:
        assert ["live"] == connection.scalars(select(saga_instances.c.correlation_id)).all()
        left = sorted(connection.scalars(select(saga_journal.c.correlation_id)).all())
    assert ["ghost-young", "live"] == left


def test_dlq_prune_removes_letters_past_the_retention(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = clock.now()
    with engine.begin() as connection:
        for age in (1, 100, 200):
            at = now - timedelta(days=age)
            connection.execute(
                insert(dead_letters).values(
                    endpoint="q",
                    headers={},
                    body=b"x",
                    reason="r",
                    attempts=1,
                    first_failed_at=at,
                    last_failed_at=at,
                )
            )
    assert 0 == main(["dlq", "prune", "--db", database_url, "--older-than", "90d"])
    assert "pruned 2 dead letters" in capsys.readouterr().out
    assert 1 == _count(engine, dead_letters)


def test_prune_finished_takes_an_age_as_a_timedelta(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """`older_than=timedelta(days=30)` means finished more than 30 days ago, as a datetime
    cutoff would: the old tombstone goes, the young one and its journal stay."""
    with Session(engine) as session, session.begin():
        runtime.handle(session, Started(sub_id="old"))
        runtime.handle(session, Cancelled(sub_id="old"))
    frozen_clock.tick(timedelta(days=31))
    with Session(engine) as session, session.begin():
        runtime.handle(session, Started(sub_id="young"))
        runtime.handle(session, Cancelled(sub_id="young"))
    with engine.begin() as connection:
        assert 1 == prune_finished(connection, older_than=timedelta(days=30))
        assert 0 == prune_finished(connection, older_than=clock.now() - timedelta(days=30))
        assert 0 == prune_journal(connection, older_than=timedelta(days=30))
    with engine.connect() as connection:
        assert ["young"] == connection.scalars(select(saga_instances.c.correlation_id)).all()
        assert {"young"} == set(connection.scalars(select(saga_journal.c.correlation_id)))


@pytest.mark.parametrize(
    ("older_than", "error", "says"),
    [
        ("30d", TypeError, "takes an aware datetime or a timedelta"),
        (timedelta(days=-1), ValueError, "must not be negative"),
    ],
)
def test_prune_finished_refuses_what_is_no_point_in_time(
    engine: Engine, older_than: object, error: type[Exception], says: str
) -> None:
    """A string or a negative age is refused with an error that says what to pass."""
    with engine.begin() as connection, pytest.raises(error, match=says):
        prune_finished(connection, older_than=older_than)  # type: ignore[arg-type]
