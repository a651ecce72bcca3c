"""A batched worker on RabbitMQ across a broker restart: the batch in hand when the connection
dies comes back, the new channel's deliveries (whose tags start again at 1) are settled by the
multiple ack of each batch, and every message is booked once with none left unacknowledged."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, outbox_count, wait_for

pytestmark = pytest.mark.usefixtures("frozen_clock")


def _shipped(bank: Bank) -> bool:
    """Whether the relay shipped every row; its connection from before the restart is dead,
    so a try that fails on it starts the next one on a new connection."""
    try:
        bank.relay.drain()
    except Exception:
        bank.relay.close()
        return False
    return outbox_count(bank.engine) == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_batched_worker_settles_everything_across_a_broker_restart(
    database_url: str, amqp_url: str, rabbitmq_control: Callable[[str], None]
) -> None:
    with bank_endpoint(database_url, amqp_url, batch_size=5) as bank:
        deposits = [Deposit(account="a", amount=n) for n in range(40)]
        bank.send(*deposits[:23])
        bank.relay.drain()
        thread = threading.Thread(target=bank.worker.run)
        thread.start()
        try:
            wait_for(lambda: len(ledger_counts(bank.engine)) >= 10, timeout=60, what="traffic")
            rabbitmq_control("stop")
            rabbitmq_control("start")
            bank.send(*deposits[23:])
            wait_for(lambda: _shipped(bank), timeout=60, what="the relay to ship the rest")
            wait_for(
                lambda: len(ledger_counts(bank.engine)) == len(deposits), timeout=90, what="all"
            )
        finally:
            bank.worker.stop()
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        before = bank.worker.stats.handled
        assert 0 == bank.worker.drain()  # nothing left unacknowledged, nothing redelivered
        assert before == bank.worker.stats.handled
