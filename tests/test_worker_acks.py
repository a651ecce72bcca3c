"""A consuming worker acknowledges handled messages together: one `multiple` ack for up to
`ack_every` of them, sent at once when the queue goes quiet, so that none waits for company
that never comes and none is left for the broker to deliver again."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from amqp.channel import Channel as AmqpChannel
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from outbox.tables import outbox_messages
from relay.acks import ACK_EVERY
from tests.bank_app import Deposit, accounts, ledger_counts
from tests.relay_helpers import bank_endpoint, consume_until, dead_letter_rows

pytestmark = [pytest.mark.second_lane, pytest.mark.usefixtures("frozen_clock")]


def _counting_acks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    acks: list[tuple[int, bool]] = []
    original = AmqpChannel.basic_ack

    def counting(channel: AmqpChannel, delivery_tag: int, multiple: bool = False) -> Any:
        acks.append((delivery_tag, multiple))
        return original(channel, delivery_tag, multiple)

    monkeypatch.setattr(AmqpChannel, "basic_ack", counting)
    return acks


def test_a_consuming_worker_acknowledges_handled_messages_together(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposits = [Deposit(account="a", amount=n) for n in range(70)]
    with bank_endpoint(database_url, amqp_url, prefetch=100) as bank:
        assert ACK_EVERY == bank.worker.ack_every
        bank.send(*deposits)
        bank.relay.drain()
        acks = _counting_acks(monkeypatch)
        consume_until(bank, lambda: any(tag == 70 for tag, _ in acks), "the 70th delivery's ack")
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        # One message per transaction all the same, but not one ack frame per message.
        assert 70 == bank.worker.stats.handled
        assert len(acks) <= 70 // 4, acks
        assert all(multiple for tag, multiple in acks if tag > 1)
        monkeypatch.undo()
        assert 0 == bank.worker.drain()  # nothing was left unacknowledged on the queue


def test_a_lone_message_is_acknowledged_while_the_worker_waits_for_more(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposits = [Deposit(account="a", amount=n) for n in range(3)]
    with bank_endpoint(database_url, amqp_url, prefetch=100) as bank:
        bank.send(*deposits)
        bank.relay.drain()
        acks = _counting_acks(monkeypatch)
        # The condition is met before `stop()`: the quiet queue, not the stop, sent the ack.
        consume_until(bank, lambda: any(tag == 3 for tag, _ in acks), "the third delivery's ack")
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)


@pytest.mark.parametrize("prefetch", [1, 2, 3, 50])
def test_acks_never_wait_for_more_messages_than_the_broker_lets_through(
    database_url: str, amqp_url: str, prefetch: int
) -> None:
    """Half the prefetch at most: the broker delivers the next messages while the handled
    ones wait for their ack; at 1, each is acknowledged on its own."""
    with bank_endpoint(database_url, amqp_url, prefetch=prefetch) as bank:
        assert 1 <= bank.worker.ack_every <= max(1, prefetch // 2)
        deposits = [Deposit(account="a", amount=n) for n in range(6)]
        bank.send(*deposits)
        bank.relay.drain()
        consume_until(bank, lambda: bank.worker.stats.handled >= 6, "six deposits")
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert 0 == bank.worker.drain()


def test_a_broker_lost_while_acks_wait_redelivers_nothing_that_would_be_recorded_twice(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handled messages whose ack waits come back after the connection drops, and the inbox
    skips them; a dead letter (one without a message id has no key to be known again by) and a
    scheduled retry are written outside the inbox, so theirs go out at once, with those before."""
    with bank_endpoint(database_url, amqp_url, prefetch=100) as bank:
        with Session(bank.engine) as session, session.begin():
            session.execute(insert(accounts).values(id="closed", open=False))
        first = [Deposit(account="a", amount=n) for n in range(3)]
        bank.send(*first)
        bank.relay.drain()
        bank.publish_raw(b"not json, and no message id", headers=None, content_type=None)
        refused = Deposit(account="closed", amount=1)
        last = [Deposit(account="a", amount=n) for n in range(3, 5)]
        bank.send(refused, *last)
        bank.relay.drain()  # the queue: three deposits, the garbage, the refused one, two more

        dropped: list[int] = []
        original = AmqpChannel.basic_ack

        def dropping_the_connection_on_the_last_ack(
            channel: AmqpChannel, delivery_tag: int, multiple: bool = False
        ) -> Any:
            if delivery_tag == 7 and not dropped:
                dropped.append(delivery_tag)
                channel.connection.sock.shutdown(socket.SHUT_RDWR)
            return original(channel, delivery_tag, multiple)

        monkeypatch.setattr(AmqpChannel, "basic_ack", dropping_the_connection_on_the_last_ack)
        consume_until(
            bank, lambda: bool(dropped) and bank.worker.stats.duplicates >= 2, "redelivery"
        )
        monkeypatch.undo()
        bank.worker.drain()  # whatever was still on its way when the worker stopped

        assert {d.message_id: 1 for d in first + last} == ledger_counts(bank.engine)
        assert 1 == len(dead_letter_rows(bank.engine))
        with Session(bank.engine) as session:
            retries = session.scalars(
                select(outbox_messages.c.message_id).where(
                    outbox_messages.c.type == Deposit.type_name
                )
            ).all()
        assert [refused.message_id] == retries
        assert 2 == bank.worker.stats.redelivered  # the last two deposits, and nothing before


def test_a_worker_stopped_amid_deliveries_leaves_the_unhandled_ones_to_the_broker(
    database_url: str, amqp_url: str
) -> None:
    """Closing the channel reads what the broker still sends; those deliveries go back to the
    queue unsettled, and the same worker's next drain takes them on its own channel."""
    deposits = [Deposit(account="a", amount=n) for n in range(60)]
    with bank_endpoint(database_url, amqp_url, prefetch=100) as bank:
        bank.send(*deposits)
        bank.relay.drain()
        consume_until(bank, lambda: bank.worker.stats.handled >= 1, "the first deposit")
        handled = bank.worker.stats.handled
        assert handled < len(deposits)  # stopped amid them, as meant
        assert len(deposits) - handled == bank.worker.drain()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert 0 == bank.worker.drain()
