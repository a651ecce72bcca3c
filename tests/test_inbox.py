"""The inbox check: a message is new once per consumer, decided in the caller's transaction."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox import Inbox, clock, prune_inbox
from outbox.tables import inbox_messages
from tests.pg_helpers import InThread, wait_until_blocked


def _record(engine: Engine, consumer: str, message_id: UUID) -> bool:
    with Session(engine) as session, session.begin():
        return Inbox(session, consumer).record(message_id)


def test_new_once_then_already_seen(engine: Engine) -> None:
    """The first transaction sees the message as new; a later one sees it as already done."""
    message_id = uuid4()
    assert _record(engine, "billing", message_id) is True
    assert _record(engine, "billing", message_id) is False
    # Each consumer keeps its own record of the same message.
    assert _record(engine, "shipping", message_id) is True


def test_rolled_back_record_does_not_count(engine: Engine) -> None:
    """If the handler's transaction rolls back, the message is still new next time."""
    message_id = uuid4()
    with Session(engine) as session:
        assert Inbox(session, "billing").record(message_id) is True
        session.rollback()
    assert _record(engine, "billing", message_id) is True


def test_seen_does_not_record(engine: Engine) -> None:
    """`seen` only looks."""
    message_id = uuid4()
    with Session(engine) as session:
        assert Inbox(session, "billing").seen(message_id) is False
        assert Inbox(session, "billing").seen(message_id) is False
    _record(engine, "billing", message_id)
    with Session(engine) as session:
        assert Inbox(session, "billing").seen(message_id) is True


def test_consumer_name_is_required(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(ValueError, match="consumer name"):
        Inbox(session, "")


@pytest.mark.parametrize("first_outcome", ["commit", "rollback"])
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_concurrent_transactions_exactly_one_wins(engine: Engine, first_outcome: str) -> None:
    """Two transactions record the same message at once: the second waits for the first, then
    sees "already seen" if the first committed, or "new" if it rolled back."""
    message_id = uuid4()
    with engine.connect() as first:
        transaction = first.begin()
        assert Inbox(first, "billing").record(message_id) is True
        second = InThread(
            engine, "inbox-second", lambda c: Inbox(c, "billing").record(message_id)
        ).start()
        wait_until_blocked(engine, "inbox-second")
        getattr(transaction, first_outcome)()
        second.join()

    assert second.error is None
    assert (first_outcome == "rollback") is second.result
    with engine.connect() as connection:
        assert 1 == connection.scalar(select(func.count()).select_from(inbox_messages))


def test_record_many_returns_the_new_ones(engine: Engine) -> None:
    """A batch's inbox: the ids not seen before come back, once each, and are recorded with
    the consumer and the time; one given twice is recorded once, seen ones are skipped."""
    seen, fresh, other = uuid4(), uuid4(), uuid4()
    _record(engine, "billing", seen)
    _record(engine, "shipping", fresh)  # another consumer's record of it counts for nothing
    with Session(engine) as session, session.begin():
        inbox = Inbox(session, "billing")
        assert {fresh, other} == inbox.record_many([seen, fresh, other, fresh])
        assert set() == inbox.record_many([fresh, other])
        assert set() == inbox.record_many([])
        alone = uuid4()
        assert {alone} == inbox.record_many([alone])
    with engine.connect() as connection:
        rows = connection.execute(
            select(inbox_messages.c.message_id, inbox_messages.c.processed_at).where(
                inbox_messages.c.consumer == "billing"
            )
        ).all()
    assert {seen, fresh, other, alone} == {row.message_id for row in rows}
    assert all(row.processed_at.tzinfo is not None for row in rows)


@pytest.mark.parametrize("first_outcome", ["commit", "rollback"])
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_concurrent_batches_exactly_one_records_each(
    engine: Engine, first_outcome: str
) -> None:
    """Two batches sharing an id: the second waits for the first, then gets the shared id as
    new only if the first rolled back; its own id is new either way."""
    shared, own, extra = uuid4(), uuid4(), uuid4()
    with engine.connect() as first:
        transaction = first.begin()
        assert {shared, extra} == Inbox(first, "billing").record_many([shared, extra])
        second = InThread(
            engine, "inbox-second", lambda c: Inbox(c, "billing").record_many([own, shared])
        ).start()
        wait_until_blocked(engine, "inbox-second")
        getattr(transaction, first_outcome)()
        second.join()

    assert second.error is None
    assert ({own, shared} if first_outcome == "rollback" else {own}) == second.result


def test_prune_deletes_old_rows_in_batches(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Pruning removes rows older than the cutoff, at most one batch per call, keeping new ones."""
    for _ in range(5):
        _record(engine, "billing", uuid4())
    frozen_clock.tick(timedelta(days=8))
    fresh = uuid4()
    _record(engine, "billing", fresh)

    cutoff = clock.now() - timedelta(days=7)
    removed = []
    while True:
        with engine.begin() as connection:
            count = prune_inbox(connection, older_than=cutoff, batch_size=2)
        removed.append(count)
        if count == 0:
            break
    assert [2, 2, 1, 0] == removed
    with engine.connect() as connection:
        assert [fresh] == list(connection.scalars(select(inbox_messages.c.message_id)))
