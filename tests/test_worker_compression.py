"""Compressed deliveries: one a kombu peer compressed (zlib, bz2, lzma) is handled; one whose
`compression` header the worker cannot undo (a peer's own scheme, a body that is not what the
header says, or one that decompresses past the size limit) is dead-lettered as it arrived, like
any other undecodable message. None stops the worker or comes back forever, and the messages
around it are handled. Runs on both brokers."""

from __future__ import annotations

import bz2
import lzma
import threading
import zlib
from collections.abc import Callable, Iterator

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


def _compressed(bank: Bank, deposit: Deposit, compression: str, body: bytes) -> None:
    bank.publish_raw(
        body,
        headers={**encode(deposit).headers, "compression": compression},
        content_type="application/json",
    )


@pytest.mark.parametrize(
    ("compression", "compress"),
    [
        ("application/x-gzip", zlib.compress),
        ("application/x-bz2", bz2.compress),
        ("application/x-lzma", lzma.compress),
    ],
)
def test_a_message_a_kombu_peer_compressed_is_handled(
    bank: Bank, compression: str, compress: Callable[[bytes], bytes]
) -> None:
    deposit = Deposit(account="zipped", amount=1)
    _compressed(bank, deposit, compression, compress(encode(deposit).payload.encode()))
    assert 1 == bank.worker.drain()
    assert {deposit.message_id: 1} == ledger_counts(bank.engine)
    assert [] == dead_letter_rows(bank.engine)


def test_a_message_that_decompresses_past_the_size_limit_is_kept_compressed(
    bank: Bank,
) -> None:
    """5 MB of blanks in 5 KB: refused before it is undone past the limit (kombu undid it
    whole, and the dead letter stored all 5 MB), dead-lettered as it arrived."""
    deposit, after = Deposit(account="bomb", amount=1), Deposit(account="after", amount=1)
    bomb = zlib.compress(b" " * 5_000_000, 9)
    _compressed(bank, deposit, "application/x-gzip", bomb)
    _publish(bank, after)
    assert 2 == bank.worker.drain()
    assert {after.message_id: 1} == ledger_counts(bank.engine)
    [letter] = dead_letter_rows(bank.engine)
    # Sizes, not the bodies: a failing comparison of 5 MB would take pytest minutes to show.
    assert (len(bomb), True) == (len(letter.body), letter.body == bomb)
    assert "over the message size limit" in letter.reason


def test_a_compressed_body_cut_short_is_dead_lettered(bank: Bank) -> None:
    deposit = Deposit(account="cut", amount=1)
    body = zlib.compress(encode(deposit).payload.encode())[:-6]
    _compressed(bank, deposit, "application/x-gzip", body)
    assert 1 == bank.worker.drain()
    [letter] = dead_letter_rows(bank.engine)
    assert (body, True) == (letter.body, "ends early" in letter.reason)
