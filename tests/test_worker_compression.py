"""A delivery whose `compression` header kombu cannot undo (a peer's own scheme, or a body that
is not what the header says) is dead-lettered like any other undecodable message, with the body
as it arrived; it neither stops the worker nor comes back forever, and the messages around it
are handled. Runs on both brokers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from outbox.envelope import encode
from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, dead_letter_rows, wait_for

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture(params=[1, 4], ids=["unbatched", "batched"])
def bank(request: pytest.FixtureRequest, database_url: str, broker_url: str) -> Iterator[Bank]:
    with bank_endpoint(database_url, broker_url, batch_size=request.param) as bank:
        yield bank


def _publish(bank: Bank, deposit: Deposit, **extra_headers: str) -> None:
    envelope = encode(deposit)
    bank.publish_raw(
        envelope.payload.encode(),
        headers={**envelope.headers, **extra_headers},
        content_type="application/json",
    )


@pytest.mark.parametrize("compression", ["application/x-peer-own", "application/x-gzip"])
def test_a_message_kombu_cannot_decompress_is_dead_lettered_by_drain(
    bank: Bank, compression: str
) -> None:
    before, poison, after = (Deposit(account=a, amount=1) for a in ("before", "poison", "after"))
    _publish(bank, before)
    _publish(bank, poison, compression=compression)
    _publish(bank, after)
    assert 3 == bank.worker.drain()
    assert {before.message_id: 1, after.message_id: 1} == ledger_counts(bank.engine)
    [letter] = dead_letter_rows(bank.engine)
    assert (poison.message_id, encode(poison).payload.encode()) == (letter.message_id, letter.body)
    assert f"compression header {compression!r}" in letter.reason
    assert 0 == bank.worker.drain()  # nothing comes back


def test_a_consuming_worker_dead_letters_it_and_goes_on(bank: Bank) -> None:
    before, poison, after = (Deposit(account=a, amount=1) for a in ("before", "poison", "after"))
    _publish(bank, before)
    _publish(bank, poison, compression="application/x-peer-own")
    _publish(bank, after)
    thread = threading.Thread(target=bank.worker.run)
    thread.start()
    try:
        wait_for(lambda: len(dead_letter_rows(bank.engine)) == 1, what="the dead letter")
        wait_for(lambda: len(ledger_counts(bank.engine)) == 2, what="the two deposits")
    finally:
        bank.worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert {before.message_id: 1, after.message_id: 1} == ledger_counts(bank.engine)
    assert (0, 1) == (bank.worker.stats.requeued, bank.worker.stats.dead_lettered)
