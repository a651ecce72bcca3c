"""Faults: a command dead-lettered at its receiver sends `Faulted[Cmd]` back to a saga that
declared it, in the dead letter's transaction; plain senders get nothing. Through the harness on
SQLite and PostgreSQL, and with real workers and a relay on the in-process broker and RabbitMQ."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from kombu import Connection
from sqlalchemy import select
from sqlalchemy.orm import Session

from outbox import Outbox
from outbox.faults import Faulted, write_fault
from outbox.return_address import wire_headers
from outbox.tables import dead_letters, outbox_messages
from sagabox.testing import SagaHarness
from sagas import RequestTimedOut
from tests.relay_helpers import wait_for
from tests.request_app import (
    CHARGE_TIMEOUT,
    SILENT,
    CardCharged,
    ChargeCard,
    ChargeWithoutWatching,
    CheckoutSaga,
    CheckoutStarted,
    apps,
    plain_apps,
)


@pytest.fixture
def shop(database_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(*apps(), database=database_url) as harness:
        yield harness


def test_a_dead_lettered_request_faults_back_and_the_saga_moves(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=0))
    [letter] = shop.dead_letters()
    assert ("payment", "shop.ChargeCard") == (letter.endpoint, letter.type)
    [charge] = [s.message for s in shop.shipped if isinstance(s.message, ChargeCard)]
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert "cancelled" == saga.state_name
    assert saga.data.fault.startswith(f"shop.ChargeCard {charge.message_id}: unrecoverable")
    assert "card declined for amount 0" in saga.data.fault
    # The fault answered the request: its timeout is gone, not left to fire.
    shop.advance(2 * CHARGE_TIMEOUT)
    assert ["shop.CheckoutStarted", "sagabox.Faulted.shop.ChargeCard"] == [
        row["trigger"] for row in shop.journal(CheckoutSaga, "O-1")
    ]


def test_a_fault_carries_no_payload_of_the_failed_command(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=-4242))
    [fault] = [s.message for s in shop.shipped if isinstance(s.message, Faulted)]
    assert {"message_type", "faulted_id", "reason", "endpoint"} == set(
        fault.model_dump(exclude={"message_id", "occurred_at", "correlation_id", "causation_id"})
    )
    assert "payment" == fault.endpoint


def test_senders_that_do_not_watch_get_no_fault(database_url: str) -> None:
    """A saga that declares no `Faulted[...]`, and a service writing to the outbox itself:
    their commands are dead-lettered at payment, and nothing comes back."""
    with SagaHarness(*plain_apps(), database=database_url) as h:
        h.dispatch(CheckoutStarted(order_id="O-1", amount=5))
        with h.transaction() as session:
            Outbox(session).add(ChargeWithoutWatching(amount=1), destination="payment")
        h.run_until_quiet()
        assert 2 == len(h.dead_letters())
        assert [] == [s for s in h.shipped if isinstance(s.message, Faulted)]
        assert "sagabox-fault-to" not in h.dead_letters()[0].headers


def test_the_fault_commits_with_the_dead_letter_or_not_at_all(shop: SagaHarness) -> None:
    """`write_fault` writes into the dead letter's transaction: rolled back, neither is kept."""
    headers = {
        "sagabox-type": "shop.ChargeCard",
        "sagabox-message-id": str(uuid.uuid4()),
        "sagabox-fault-to": "orders",
        "sagabox-origin-saga": CheckoutSaga.saga_type,
        "sagabox-origin-saga-id": str(CheckoutSaga.id_for("O-1")),
    }
    engine = shop.apps[0].engine
    with Session(engine) as session:
        with session.begin():
            assert write_fault(session, endpoint="payment", headers=headers, reason="boom")
            assert 1 == len(session.execute(select(outbox_messages)).all())
            session.rollback()
        assert [] == session.execute(select(outbox_messages)).all()
    # Malformed return addresses write nothing (the dead letter still says what failed).
    with Session(engine) as session, session.begin():
        for broken in ({**headers, "sagabox-origin-saga-id": "x"}, {**headers, "sagabox-type": 1}):
            assert not write_fault(session, endpoint="payment", headers=broken, reason="r")
        assert [] == session.execute(select(outbox_messages)).all()


def test_a_fault_after_the_request_timed_out_is_late_not_a_dead_letter(
    shop: SagaHarness,
) -> None:
    """The receiver gives up after the saga stopped waiting: like a late reply, the fault is
    journaled `late` and changes nothing, instead of failing until the saga's endpoint
    dead-letters it."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    [request] = [s for s in shop.shipped if isinstance(s.message, ChargeCard)]
    shop.advance(CHARGE_TIMEOUT)
    assert "unanswered" == shop.state(CheckoutSaga, "O-1")
    with shop.transaction() as session:
        assert write_fault(
            session, endpoint="payment", headers=wire_headers(request.message), reason="late"
        )
    shop.run_until_quiet()
    shop.advance(timedelta(minutes=1))  # past any retry of a failing delivery
    assert [] == shop.dead_letters()
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("unanswered", "") == (saga.state_name, saga.data.fault)
    last = shop.journal(CheckoutSaga, "O-1")[-1]
    assert (Faulted[ChargeCard].type_name, "late") == (last["trigger"], last["outcome"])


def test_a_real_workers_dead_letter_reaches_the_saga(database_url: str, broker_url: str) -> None:
    """Two endpoints with their own workers and a relay on one broker (memory:// and RabbitMQ):
    payment dead-letters the charge, the fault travels back, the saga is cancelled."""
    suffix = uuid.uuid4().hex[:8]
    orders, payment = apps(database=database_url, broker=broker_url, exchange=f"faults-{suffix}")
    workers = [orders.worker(), payment.worker()]
    for worker in workers:
        worker.drain()  # declares the queues and their bindings
    relay = orders.relay(listen=False)
    try:
        with Session(orders.engine) as session, session.begin():
            orders.start(session, CheckoutSaga, CheckoutStarted(order_id="O-1", amount=0))

        def cancelled() -> bool:
            relay.drain()
            for worker in workers:
                worker.drain()
            with Session(orders.engine) as session:
                saga = orders.runtime.load(session, CheckoutSaga, "O-1")
            return saga is not None and saga.state_name == "cancelled"

        wait_for(cancelled, what="the fault to cancel the saga", every=0.05)
        with orders.engine.connect() as connection:
            letters = connection.execute(select(dead_letters.c.endpoint, dead_letters.c.type))
            assert [("payment", "shop.ChargeCard")] == [tuple(row) for row in letters]
    finally:
        relay.close()
        with Connection(orders.broker_url) as connection:
            for worker in workers:
                worker.queue()(connection.channel()).delete()
        orders.engine.dispose()
        payment.engine.dispose()


def test_faults_and_request_timeouts_of_what_never_answers_are_refused() -> None:
    """Events are published, never answered, and only commands are requested: a transition on
    `Faulted[AnEvent]` or `RequestTimedOut[AnEvent]` could never fire, so the subscription
    itself is refused, naming what to declare instead."""
    with pytest.raises(TypeError, match="CardCharged is an Event, and only commands fault"):
        Faulted[CardCharged]
    with pytest.raises(TypeError, match=re.escape("Faulted[ChargeCard] is not a Command")):
        RequestTimedOut[Faulted[ChargeCard]]
    with pytest.raises(TypeError, match="only commands are requested"):
        RequestTimedOut[CardCharged]
    assert ChargeCard is Faulted[ChargeCard].of
