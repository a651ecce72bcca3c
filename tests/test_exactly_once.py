"""Issue 15's sequences, one regression test each: rescheduled timeouts, renewed correlation ids,
changed correlation ids, ignored timeouts, wildcard sources, journal retention, forged ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox import Inbox, Message, clock
from outbox.envelope import CONTENT_TYPE, Envelope, decode
from outbox.tables import outbox_messages
from sagas import SagaError, SagaRuntime
from sagas.journal import journal_of
from sagas.queries import stuck_sagas
from sagas.tables import saga_instances, saga_journal
from tests.subscription_app import (
    DAY,
    Cancelled,
    ChargeCard,
    Charged,
    Completed,
    Expire,
    Rekey,
    Remind,
    Started,
    SubscriptionSaga,
)

runtime = SagaRuntime([SubscriptionSaga], endpoint="subs")


def _handle(engine: Engine, message: Message) -> list[Any]:
    with Session(engine) as session, session.begin():
        return runtime.handle(session, message)


def _load(engine: Engine, sub_id: str) -> SubscriptionSaga:
    with engine.connect() as connection:
        saga = runtime.load(connection, SubscriptionSaga, sub_id)
    assert saga is not None
    return saga


def _rows(engine: Engine, type_name: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(outbox_messages).where(outbox_messages.c.type == type_name)
            ).mappings()
        )


def _fire(engine: Engine, type_name: str, message_type: type[Message]) -> list[Any]:
    """Ship the outbox rows of one timeout type, as the relay does, and handle each one."""
    results = []
    for row in _rows(engine, type_name):
        with engine.begin() as connection:
            connection.execute(outbox_messages.delete().where(outbox_messages.c.id == row["id"]))
        results.extend(_handle(engine, _decode(row, message_type)))
    return results


def _decode(row: Any, message_type: type[Message]) -> Message:
    envelope = Envelope.from_wire(row["payload"], row["headers"], CONTENT_TYPE)
    message = decode(envelope)
    assert isinstance(message, message_type)
    return message


def test_item1_a_timeout_rescheduled_in_its_transition_fires_only_at_the_new_time(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Two actions of one transition schedule "expire" (day 6, then day 8): one outbox row, due
    on day 8 with the pending entry's id; on day 6 nothing fires."""
    start = clock.now()
    _handle(engine, Started(sub_id="S-1"))
    [row] = _rows(engine, "subs.Expire")
    saga = _load(engine, "S-1")
    assert (start + 8 * DAY, saga.timeouts["expire"].message_id) == (
        row["available_at"],
        row["message_id"],
    )
    frozen_clock.tick(8 * DAY)
    assert ["transition"] == [h.outcome for h in _fire(engine, "subs.Expire", Expire)]
    assert "expired" == _load(engine, "S-1").state_name


def test_item2_a_renewed_correlation_id_emits_ids_the_pruned_saga_never_used(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """January's subscription finishes and is pruned; February's, under the same key, sends a
    charge whose id the payment service's inbox has not seen: it is booked."""
    from sagas import prune_finished

    charges: list[uuid.UUID] = []
    for _month in ("January", "February"):
        _handle(engine, Started(sub_id="S-2"))
        [row] = _rows(engine, "subs.ChargeCard")
        charges.append(row["message_id"])
        with engine.begin() as connection:  # the relay ships it; payments books it
            connection.execute(outbox_messages.delete())
            assert Inbox(connection, "payments").record(row["message_id"])
        _handle(engine, Charged(sub_id="S-2"))
        _handle(engine, Completed(sub_id="S-2"))
        frozen_clock.tick(40 * DAY)
        with engine.begin() as connection:
            assert 1 == prune_finished(connection, older_than=clock.now() - 30 * DAY)
    assert charges[0] != charges[1]


def test_item3_changing_the_correlation_id_is_refused_with_both_values(engine: Engine) -> None:
    """An action assigning `self.correlation_id` raises a named error naming type, id, old and
    new values; the caller's transaction rolls back and the saga keeps its key."""
    from sagas import CorrelationChanged

    _handle(engine, Started(sub_id="S-3"))
    with pytest.raises(CorrelationChanged) as raised:
        _handle(engine, Rekey(sub_id="S-3", new_id="S-3b"))
    text = str(raised.value)
    for part in ("subs.Subscription", str(SubscriptionSaga.id_for("S-3")), "'S-3'", "'S-3b'"):
        assert part in text
    with engine.connect() as connection:
        keys = connection.scalars(select(saga_instances.c.correlation_id)).all()
    assert ["S-3"] == keys
    assert "charging" == _handle(engine, Charged(sub_id="S-3"))[0].from_state


def test_item4_an_ignored_timeout_leaves_the_pending_set_and_stuck_sees_the_saga(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """The reminder outlives "charging" into "active", which ignores it: once delivered it is no
    longer pending, and a saga that then waits for nothing is listed as stuck."""
    _handle(engine, Started(sub_id="S-4"))
    _handle(engine, Charged(sub_id="S-4"))
    frozen_clock.tick(DAY)
    assert ["ignored"] == [h.outcome for h in _fire(engine, "subs.Remind", Remind)]
    with engine.connect() as connection:
        saga = runtime.load(connection, SubscriptionSaga, "S-4")
        assert saga is not None
        assert {} == saga.timeouts
        later = clock.now() + 3 * DAY
        assert ["S-4"] == [
            s.correlation_id for s in stuck_sagas(connection, older_than=later - 2 * DAY)
        ]


def test_item4_a_saga_whose_only_timeout_is_long_overdue_is_stuck(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Its timeout rows were lost (deleted by hand, say): once its earliest pending timeout (the
    day-1 reminder) is overdue by more than the threshold, nothing will move the saga on."""
    _handle(engine, Started(sub_id="S-4b"))
    with engine.begin() as connection:
        connection.execute(outbox_messages.delete())
        frozen_clock.tick(2.5 * DAY)
        assert [] == stuck_sagas(connection, older_than=clock.now() - 2 * DAY)
        frozen_clock.tick(2.5 * DAY)
        stuck = stuck_sagas(connection, older_than=clock.now() - 2 * DAY)
    assert ["S-4b"] == [s.correlation_id for s in stuck]


def test_item5_a_wildcard_transition_does_not_start_a_saga(engine: Engine) -> None:
    """A stray Cancelled for an unknown subscription meets `on_not_found` (ignore): journaled
    as not found, and no saga is created in a final state."""
    [handled] = _handle(engine, Cancelled(sub_id="S-5"))
    assert "not_found" == handled.outcome
    with engine.connect() as connection:
        assert 0 == connection.scalar(select(func.count()).select_from(saga_instances))
    assert "Started" in str(sorted(SubscriptionSaga.starting_triggers))
    assert frozenset({"subs.Started"}) == SubscriptionSaga.starting_triggers


def test_item5_starts_true_lets_a_wildcard_start_a_saga() -> None:
    """Saying so explicitly still works: `on(X, "*", ..., starts=True)`."""
    from pydantic import BaseModel

    from sagas import Saga, on

    class Data(BaseModel):
        pass

    class Anything(Saga[Data], name="subs.test.Anything"):
        states = ["new", {"name": "gone", "final": True}]
        transitions = [on(Cancelled, "*", "gone", starts=True)]
        correlation = {Cancelled: "sub_id"}

    assert frozenset({"subs.Cancelled"}) == Anything.starting_triggers


def test_item6_journal_lines_of_unknown_sagas_are_pruned_in_batches(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Lines for sagas that never existed go after the retention, a batch per call; the lines
    of a live saga stay."""
    from sagas import prune_journal

    for n in range(5):
        _handle(engine, Completed(sub_id=f"ghost-{n}"))
    _handle(engine, Started(sub_id="S-6"))
    frozen_clock.tick(31 * DAY)
    _handle(engine, Completed(sub_id="ghost-new"))
    counts = []
    for _ in range(4):
        with engine.begin() as connection:
            cutoff = clock.now() - 30 * DAY
            counts.append(prune_journal(connection, older_than=cutoff, batch_size=2))
    assert [2, 2, 1, 0] == counts
    with engine.connect() as connection:
        left = connection.execute(select(saga_journal.c.correlation_id)).scalars().all()
        assert ["S-6", "ghost-new"] == sorted(left)
        assert 1 == len(journal_of(connection, SubscriptionSaga.id_for("S-6")))


# What main derived every id from: public data only (saga type and business key).
_OLD_NAMESPACE = uuid.UUID("0c6f2b0e-5a43-4f4e-8f44-2f3d61b8c7a1")


def test_item8_a_forged_message_with_an_id_from_public_data_cannot_pre_empt_the_real_one(
    engine: Engine,
) -> None:
    """An attacker who knows the saga type and the key computes the id the charge would have
    had, and gets a forgery processed first: the real charge still has an id of its own."""
    forged = uuid.uuid5(_OLD_NAMESPACE, f"{SubscriptionSaga.id_for('S-8')}/1/0")
    with engine.begin() as connection:
        assert Inbox(connection, "payments").record(forged)
    _handle(engine, Started(sub_id="S-8"))
    [row] = _rows(engine, "subs.ChargeCard")
    with engine.begin() as connection:
        assert Inbox(connection, "payments").record(row["message_id"])
    decoded = _decode(row, ChargeCard)
    assert decoded.message_id != forged


def test_item8_ids_depend_on_the_starting_message_not_only_on_the_key(engine: Engine) -> None:
    """Two sagas with the same key started by different messages emit different ids; the same
    start re-run (rolled back first) emits the same ones."""
    start = Started(sub_id="S-9")

    def charge_id(message: Started, commit: bool) -> uuid.UUID:
        with Session(engine) as session:
            runtime.handle(session, message)
            [found] = session.scalars(
                select(outbox_messages.c.message_id).where(
                    outbox_messages.c.type == "subs.ChargeCard"
                )
            ).all()
            session.commit() if commit else session.rollback()
        assert isinstance(found, uuid.UUID)
        return found

    first = charge_id(start, commit=False)
    assert first == charge_id(start, commit=False)
    assert first != charge_id(Started(sub_id="S-9"), commit=False)


def test_item8_with_a_deployment_key_ids_are_a_keyed_hash(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a secret key (given, or from $SAGABOX_ID_KEY) the same start gives other ids than
    without one (someone who saw the start cannot compute them), and the same ones again."""
    start = Started(sub_id="S-10")

    def charge_id(on: SagaRuntime) -> uuid.UUID:
        with Session(engine) as session:
            on.handle(session, start)
            found = session.scalars(
                select(outbox_messages.c.message_id).where(
                    outbox_messages.c.type == "subs.ChargeCard"
                )
            ).one()
            session.rollback()
        assert isinstance(found, uuid.UUID)
        return found

    monkeypatch.delenv("SAGABOX_ID_KEY", raising=False)
    plain = charge_id(SagaRuntime([SubscriptionSaga], endpoint="subs"))
    keyed = charge_id(SagaRuntime([SubscriptionSaga], endpoint="subs", id_key=b"s3cret"))
    monkeypatch.setenv("SAGABOX_ID_KEY", "s3cret")
    from_env = charge_id(SagaRuntime([SubscriptionSaga], endpoint="subs"))
    assert plain != keyed
    assert keyed == from_env


def test_error_base_class() -> None:
    """Every saga error is a SagaError (the correlation one included)."""
    from sagas import CorrelationChanged

    assert issubclass(CorrelationChanged, SagaError)
