"""A worker's prefetch goes to the broker as AMQP's 16-bit prefetch count: however large the
batch size or the prefetch asked for, the worker consumes (with the largest count AMQP takes)
instead of failing to open its consumer again and again."""

from __future__ import annotations

import threading

import pytest

from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import bank_endpoint, wait_for

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.mark.parametrize(
    "options", [{"batch_size": 40_000}, {"prefetch": 70_000}], ids=["batch", "prefetch"]
)
def test_a_prefetch_past_amqps_limit_still_consumes(
    database_url: str, broker_url: str, options: dict[str, int]
) -> None:
    with bank_endpoint(database_url, broker_url, **options) as bank:
        deposits = [Deposit(account="a", amount=n) for n in range(3)]
        bank.send(*deposits)
        bank.relay.drain()
        thread = threading.Thread(target=bank.worker.run)
        thread.start()
        try:
            wait_for(lambda: bank.worker.stats.handled >= 3, what="three deposits")
        finally:
            bank.worker.stop()
            thread.join(timeout=30)
        assert not thread.is_alive()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
