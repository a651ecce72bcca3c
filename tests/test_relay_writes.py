"""The publisher sends a batch's frames in few socket writes (`relay.coalesced_writes`), and
the broker gets every message of it whole, in order, confirmed: on RabbitMQ, the only broker
whose frames go through a socket of py-amqp's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kombu import Connection

from outbox.claim import OutboxRow
from relay.coalesced_writes import WRITE_AT
from relay.publisher import Publisher
from tests.poison_helpers import broker_message_limit
from tests.test_relay import Listener


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    listener = Listener(amqp_url, "bank.Deposited")
    yield listener
    listener.close()


def _rows(count: int, size: int) -> list[OutboxRow]:
    return [
        OutboxRow(
            number,
            uuid.uuid4(),
            "bank.Deposited",
            "bank.Deposited",
            f"k{number}",
            json.dumps({"n": number, "note": "x" * size}),
            {"sagabox-type": "bank.Deposited", "n": str(number)},
            0,
        )
        for number in range(count)
    ]


def _publish_counting_writes(
    amqp_url: str, exchange: str, rows: list[OutboxRow]
) -> tuple[list[int], list[OutboxRow]]:
    """Publish `rows` in one batch; the sizes of the socket writes it took, and the confirmed."""
    with Connection(amqp_url) as connection:
        publisher = Publisher(connection, exchange)
        transport: Any = connection.connection.transport
        sendall = transport._write
        writes: list[int] = []

        def counting(data: Any) -> None:
            writes.append(len(data))
            sendall(data)

        transport._write = counting
        try:
            outcome = publisher.publish(rows)
        finally:
            transport._write = sendall
            publisher.close()
    assert [] == outcome.failed
    return writes, outcome.confirmed


def _arrived_whole(listener: Listener, rows: list[OutboxRow]) -> None:
    got: list[Any] = listener.fetch()
    assert [str(row.message_id) for row in rows] == [m.properties["message_id"] for m in got]
    assert [row.payload for row in rows] == [m.body for m in got]
    assert [row.headers for row in rows] == [m.headers for m in got]


def test_a_batch_goes_to_the_socket_in_few_writes_the_first_one_early(
    amqp_url: str, listener: Listener
) -> None:
    """200 messages of 300 bytes (about 100 KB): a write each time the gathered frames reach
    `WRITE_AT` (16 KiB), and the rest, where py-amqp alone made 200. The first leaves after
    some 40 messages, so the broker works on them while the relay prepares the others; at 256
    KiB it left with the whole batch, and the broker waited for it."""
    rows = _rows(200, 250)
    writes, confirmed = _publish_counting_writes(amqp_url, listener.exchange, rows)
    assert rows == confirmed
    _chunked(writes)
    assert writes[0] < sum(writes) // 4
    _arrived_whole(listener, rows)


def test_a_batch_of_big_messages_goes_out_in_chunks(amqp_url: str, listener: Listener) -> None:
    """About 1 MB in messages of 10 KB: a write each time the gathered frames reach
    `WRITE_AT`, and the rest."""
    rows = _rows(100, 10_000)
    writes, confirmed = _publish_counting_writes(amqp_url, listener.exchange, rows)
    assert rows == confirmed
    _chunked(writes)
    _arrived_whole(listener, rows)


def _chunked(writes: list[int]) -> None:
    """Each write but the last holds at least `WRITE_AT` bytes: as few writes as that allows
    (a write leaves with the message that filled the buffer, so one more may be needed)."""
    assert all(size >= WRITE_AT for size in writes[:-1])
    assert len(writes) <= sum(writes) // WRITE_AT + 1


def test_a_refusal_mid_batch_is_found_after_the_batch_is_sent(
    amqp_url: str, listener: Listener
) -> None:
    """A row over max_message_size but under `ALONE_ABOVE` opens a batch of 400: the broker
    closes the channel over it once the first chunk arrives, while the rest is still gathered.
    py-amqp polls the socket before each publish; had it read the close there, it would answer
    and reopen the channel in frames still gathered, and wait for the reopening for ever (the
    read timeout ends that wait here). The refusal is that row's alone, the rest confirmed."""
    rows = _rows(400, 2_000)
    rows[0] = replace(rows[0], payload=json.dumps({"n": 0, "note": "x" * 40_000}))
    with (
        broker_message_limit(30_000),
        Connection(amqp_url, transport_options={"read_timeout": 10}) as connection,
    ):
        publisher = Publisher(connection, listener.exchange, confirm_timeout=10)
        try:
            outcome = publisher.publish(rows)
            later = publisher.publish(_rows(1, 10))
        finally:
            publisher.close()
    assert [(rows[0], "refused")] == [(failure.row, failure.kind) for failure in outcome.failed]
    assert rows[1:] == outcome.confirmed
    assert 1 == len(later.confirmed)
