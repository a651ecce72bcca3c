"""The envelope survives a real broker: what kombu delivers decodes to the message sent."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from kombu import Connection, Consumer, Exchange, Queue
from kombu.exceptions import ContentDisallowed
from kombu.message import Message as KombuMessage

from outbox import CONTENT_TYPE, Envelope, decode, encode
from tests.messages_fixture import LoanRequested


@pytest.fixture
def channel_queue(broker_url: str) -> Iterator[tuple[Connection, Queue]]:
    """A connection and an exclusive, auto-deleted queue of this test's own."""
    name = f"test-wire-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, auto_delete=True)
    with Connection(broker_url, connect_timeout=5) as connection:
        queue(connection.default_channel).declare()
        yield connection, queue
        queue(connection.default_channel).delete()


def _receive(connection: Connection, queue: Queue) -> KombuMessage:
    """Take one message off the queue as delivered, without letting kombu decode its body."""
    received: list[KombuMessage] = []
    with Consumer(connection, queues=[queue], accept=[CONTENT_TYPE], on_message=received.append):
        connection.drain_events(timeout=5)
    assert 1 == len(received)
    received[0].ack()
    return received[0]


def test_envelope_crosses_the_broker_unchanged(channel_queue: tuple[Connection, Queue]) -> None:
    """Body, headers and content type arrive as sent, and decode to an equal message."""
    connection, queue = channel_queue
    sent = LoanRequested(
        loan_id="L-9", amount=Decimal("12.34"), applicant="Lin", correlation_id="c"
    )
    envelope = encode(sent, extra_headers={"traceparent": "00-1-2-01"})
    connection.Producer().publish(
        envelope.payload.encode(),
        exchange=queue.exchange,
        routing_key=queue.routing_key,
        content_type=CONTENT_TYPE,
        content_encoding="utf-8",
        headers=envelope.headers,
        message_id=str(sent.message_id),
        delivery_mode=2,
    )
    received = _receive(connection, queue)
    wire = Envelope.from_wire(received.body, received.headers, received.content_type)
    assert sent == decode(wire)
    assert "00-1-2-01" == wire.headers["traceparent"]


def test_pickle_is_refused_by_the_consumer(channel_queue: tuple[Connection, Queue]) -> None:
    """A pickled message is never unpickled: kombu refuses it with `accept` restricted to JSON,
    and the envelope check refuses it again."""
    connection, queue = channel_queue
    connection.Producer().publish(
        pickle.dumps({"boom": True}),
        exchange=queue.exchange,
        routing_key=queue.routing_key,
        content_type="application/x-python-serialize",
        content_encoding="binary",
        headers=encode(LoanRequested(loan_id="x", amount=Decimal(1), applicant="y")).headers,
    )
    received = _receive(connection, queue)
    with pytest.raises(ContentDisallowed):
        received.decode()
    with pytest.raises(Exception, match="content type"):
        Envelope.from_wire(received.body, received.headers, received.content_type)
