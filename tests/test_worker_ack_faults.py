"""A database outage (the worker requeues and pauses) and a dropped broker connection
while handled messages' acks wait, for several prefetch counts and batch sizes."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import sqlalchemy as sa
from amqp.channel import Channel as AmqpChannel

from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import bank_endpoint, consume_until, dead_letter_rows

pytestmark = [pytest.mark.second_lane, pytest.mark.usefixtures("frozen_clock")]


# A spread of the cases, not their product: prefetch 1 (acks one by one) to 50, batches of 1
# to 50, the database failing on the first, second or fourth batch.
@pytest.mark.parametrize(
    ("prefetch", "batch_size", "fail_on"),
    [(1, 1, 1), (2, 1, 2), (3, 3, 4), (50, 1, 2), (50, 3, 4), (50, 50, 1)],
)
def test_a_database_outage_while_acks_wait_settles_every_delivery_once(
    database_url: str,
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
    prefetch: int,
    batch_size: int,
    fail_on: int,
) -> None:
    deposits = [Deposit(account="a", amount=n) for n in range(12)]
    with bank_endpoint(database_url, amqp_url, prefetch=prefetch, batch_size=batch_size) as bank:
        bank.send(*deposits)
        bank.relay.drain()
        worker = bank.worker
        original = worker.process_batch
        calls: list[int] = []

        def failing_once(deliveries: list[Any]) -> Any:
            calls.append(len(deliveries))
            if len(calls) == fail_on:
                raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("db down"))
            return original(deliveries)

        monkeypatch.setattr(worker, "process_batch", failing_once)
        consume_until(
            bank,
            lambda: (
                sum(ledger_counts(bank.engine).values()) >= len(deposits)
                and (len(calls) < fail_on or worker.stats.requeued > 0)
            ),
            "every deposit",
        )
        monkeypatch.undo()
        left = worker.drain()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert [] == dead_letter_rows(bank.engine)
        assert 0 == worker.drain(), f"{left} left after the run; calls {calls}"
        assert worker.stats.duplicates == 0 or worker.stats.redelivered >= worker.stats.duplicates


@pytest.mark.parametrize(("batch_size", "drop_at"), [(1, 2), (3, 5), (50, 9)])
def test_a_connection_dropped_on_an_ack_loses_nothing_and_doubles_nothing(
    database_url: str,
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
    drop_at: int,
) -> None:
    deposits = [Deposit(account="a", amount=n) for n in range(12)]
    with bank_endpoint(database_url, amqp_url, prefetch=8, batch_size=batch_size) as bank:
        bank.send(*deposits)
        bank.relay.drain()
        dropped: list[int] = []
        original = AmqpChannel.basic_ack

        def dropping(channel: AmqpChannel, delivery_tag: int, multiple: bool = False) -> Any:
            if delivery_tag >= drop_at and not dropped:
                dropped.append(delivery_tag)
                channel.connection.sock.shutdown(socket.SHUT_RDWR)
            return original(channel, delivery_tag, multiple)

        monkeypatch.setattr(AmqpChannel, "basic_ack", dropping)
        consume_until(
            bank,
            lambda: (
                bool(dropped)
                and bank.worker.stats.handled >= len(deposits)
                and sum(ledger_counts(bank.engine).values()) >= len(deposits)
            ),
            "every deposit after the drop",
        )
        monkeypatch.undo()
        bank.worker.drain()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert [] == dead_letter_rows(bank.engine)
        assert 0 == bank.worker.drain()


def test_a_dead_letter_written_before_the_database_fails_midbatch_is_not_written_again(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch dead-letters its garbage, then the database goes away: the rest goes back to
    the queue, the garbage (settled, and without an id to be known again by) does not."""
    with bank_endpoint(database_url, amqp_url, prefetch=10, batch_size=3) as bank:
        bank.publish_raw(b"garbage, no message id", headers=None, content_type=None)
        deposits = [Deposit(account="a", amount=n) for n in range(2)]
        bank.send(*deposits)
        bank.relay.drain()
        worker = bank.worker

        def unavailable(*_: Any) -> Any:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("db down"))

        monkeypatch.setattr(worker, "_handle_together", unavailable)
        monkeypatch.setattr(worker, "_handle_alone", unavailable)
        with pytest.raises(sa.exc.OperationalError):
            worker.drain()
        monkeypatch.undo()
        assert 2 == worker.drain()  # the deposits, given back; not the garbage
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert 1 == len(dead_letter_rows(bank.engine))
        assert 0 == worker.drain()
