"""Batched handling (`Worker(batch_size=N)`, `sagabox worker --batch-size N`): several messages per
transaction, each still deduplicated on its own, and a failing batch redone one by one. Runs on
both databases and both brokers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from amqp.channel import Channel as AmqpChannel
from sqlalchemy import Engine, event, insert
from sqlalchemy.orm import Session

from outbox.envelope import encode
from tests.bank_app import Deposit, accounts, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, dead_letter_rows, inbox_count, wait_for

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def bank(database_url: str, broker_url: str) -> Iterator[Bank]:
    with bank_endpoint(database_url, broker_url, batch_size=10) as bank:
        yield bank


class Commits:
    """Counts the transactions committed on an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0

    def __enter__(self) -> Commits:
        event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "commit", self._on_commit)

    def _on_commit(self, connection: Any) -> None:
        self.count += 1


def test_a_batch_of_messages_commits_once_and_each_takes_effect(bank: Bank) -> None:
    """Ten deposits waiting on the queue are booked in one transaction, one inbox row each."""
    deposits = [Deposit(account="a", amount=n) for n in range(10)]
    bank.send(*deposits)
    bank.relay.drain()
    with Commits(bank.engine) as commits:
        assert 10 == bank.worker.drain()
    assert 1 == commits.count
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
    assert 10 == inbox_count(bank.engine) == bank.worker.stats.handled


def test_a_partial_batch_is_handled_when_the_queue_runs_dry(bank: Bank) -> None:
    """Thirteen messages make a batch of ten and one of three: nothing waits for a full batch."""
    deposits = [Deposit(account="a", amount=n) for n in range(13)]
    bank.send(*deposits)
    bank.relay.drain()
    with Commits(bank.engine) as commits:
        assert 13 == bank.worker.drain()
    assert 2 == commits.count
    assert 13 == len(ledger_counts(bank.engine))


def test_duplicates_within_a_batch_and_from_before_are_skipped_alone(bank: Bank) -> None:
    """A message seen in an earlier transaction and two copies of one message in the same batch
    take effect once each; the other messages of the batch are booked as usual."""
    earlier = Deposit(account="a", amount=1)
    bank.send(earlier)
    bank.relay.drain()
    bank.worker.drain()
    twice = Deposit(account="a", amount=2)
    fresh = [Deposit(account="a", amount=n) for n in range(3, 6)]
    bank.send(earlier, twice, *fresh, twice)
    bank.relay.drain()
    assert 6 == bank.worker.drain()
    expected = {m.message_id: 1 for m in [earlier, twice, *fresh]}
    assert expected == ledger_counts(bank.engine)
    assert (5, 2) == (bank.worker.stats.handled, bank.worker.stats.duplicates)


def test_a_failing_message_sends_its_batch_one_by_one_and_the_others_commit(
    bank: Bank, caplog: pytest.LogCaptureFixture
) -> None:
    """One deposit to a closed account rolls the shared transaction back; the batch is redone
    message by message, so the nine good deposits are booked once and the bad one is retried
    later, as without batching."""
    caplog.set_level(logging.INFO, "sagabox.worker")
    with Session(bank.engine) as session, session.begin():
        session.execute(insert(accounts).values(id="closed", open=False))
    good = [Deposit(account="a", amount=n) for n in range(9)]
    poison = Deposit(account="closed", amount=5)
    bank.send(*good[:4], poison, *good[4:])
    bank.relay.drain()
    with Commits(bank.engine) as commits:
        assert 10 == bank.worker.drain()
    assert {d.message_id: 1 for d in good} == ledger_counts(bank.engine)
    stats = bank.worker.stats
    assert (9, 1, 1) == (stats.handled, stats.retried, stats.batches_redone)
    # The failed batch committed nothing; then nine handled, one retry scheduled.
    assert 10 == commits.count
    assert "a batch of 10 messages failed (AccountClosed" in caplog.text
    assert 9 == inbox_count(bank.engine)


def test_a_malformed_message_is_dead_lettered_and_the_rest_share_a_transaction(
    bank: Bank,
) -> None:
    """An unreadable message is refused before the batch's transaction; it goes to the dead
    letters and the deposits around it are still booked together."""
    deposits = [Deposit(account="a", amount=n) for n in range(4)]
    bank.send(*deposits[:2])
    bank.relay.drain()
    envelope = encode(Deposit(account="a", amount=99))
    bank.publish_raw(
        json.dumps({"not": "a deposit"}).encode(),
        headers=envelope.headers,
        content_type="application/json",
    )
    bank.send(*deposits[2:])
    bank.relay.drain()
    with Commits(bank.engine) as commits:
        assert 5 == bank.worker.drain()
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
    [letter] = dead_letter_rows(bank.engine)
    assert "cannot decode" in letter.reason
    assert 2 == commits.count  # the dead letter, then the four deposits


def test_a_consuming_worker_batches_what_arrives_together(bank: Bank) -> None:
    """`run()` (what `sagabox worker` does): fifty deposits already queued are consumed in
    batches of at most ten, all booked once; `stop()` ends it."""
    deposits = [Deposit(account="a", amount=n) for n in range(50)]
    bank.send(*deposits)
    bank.relay.drain()
    with Commits(bank.engine) as commits:
        thread = threading.Thread(target=bank.worker.run)
        thread.start()
        try:
            wait_for(lambda: bank.worker.stats.handled >= 50, what="fifty deposits")
        finally:
            bank.worker.stop()
            thread.join(timeout=30)
    assert not thread.is_alive()
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
    assert 5 <= commits.count < 50


def test_a_batch_is_acknowledged_with_one_ack_on_rabbitmq(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On AMQP a handled batch is settled by one `multiple` ack of its last delivery, not one
    frame per message; every message is settled all the same: none comes back."""
    acks: list[tuple[int, bool]] = []
    original = AmqpChannel.basic_ack

    def counting(channel: AmqpChannel, delivery_tag: int, multiple: bool = False) -> Any:
        acks.append((delivery_tag, multiple))
        return original(channel, delivery_tag, multiple)

    with bank_endpoint(database_url, amqp_url, batch_size=10) as bank:
        deposits = [Deposit(account="a", amount=n) for n in range(25)]
        bank.send(*deposits)
        bank.relay.drain()
        monkeypatch.setattr(AmqpChannel, "basic_ack", counting)
        assert 25 == bank.worker.drain()
        assert [(10, True), (20, True), (25, True)] == acks
        assert 0 == bank.worker.drain()  # nothing left unacknowledged on the queue
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)


def test_a_batch_size_below_one_is_refused(bank: Bank) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        bank.app.worker(batch_size=0)
