"""A consuming worker acknowledges handled messages together: one `multiple` ack for up to
`ack_every` of them, sent at once when the queue goes quiet, so that none waits for company
that never comes and none is left for the broker to deliver again."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from amqp.channel import Channel as AmqpChannel

from relay.worker import ACK_EVERY
from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, wait_for

pytestmark = [pytest.mark.second_lane, pytest.mark.usefixtures("frozen_clock")]


def _counting_acks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    acks: list[tuple[int, bool]] = []
    original = AmqpChannel.basic_ack

    def counting(channel: AmqpChannel, delivery_tag: int, multiple: bool = False) -> Any:
        acks.append((delivery_tag, multiple))
        return original(channel, delivery_tag, multiple)

    monkeypatch.setattr(AmqpChannel, "basic_ack", counting)
    return acks


def _consume(bank: Bank, until: Any, what: str) -> None:
    thread = threading.Thread(target=bank.worker.run)
    thread.start()
    try:
        wait_for(until, what=what)
    finally:
        bank.worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_consuming_worker_acknowledges_handled_messages_together(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deposits = [Deposit(account="a", amount=n) for n in range(70)]
    with bank_endpoint(database_url, amqp_url, prefetch=100) as bank:
        assert ACK_EVERY == bank.worker.ack_every
        bank.send(*deposits)
        bank.relay.drain()
        acks = _counting_acks(monkeypatch)
        _consume(bank, lambda: any(tag == 70 for tag, _ in acks), "the 70th delivery's ack")
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
        _consume(bank, lambda: any(tag == 3 for tag, _ in acks), "the third delivery's ack")
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
        _consume(bank, lambda: bank.worker.stats.handled >= 6, "six deposits")
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        assert 0 == bank.worker.drain()
