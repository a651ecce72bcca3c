"""The relay writes an outbox row's `basic.publish` frames itself (`relay.publish_frames`): byte
for byte what py-amqp would write for the same message, or nothing, leaving the row to py-amqp;
and on RabbitMQ both kinds of row arrive whole, in order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from hypothesis import event, given, settings
from hypothesis import strategies as st
from kombu import Connection

from outbox.claim import OutboxRow
from outbox.envelope import CONTENT_TYPE
from relay.publish_frames import HeadersTooLarge, PublishFrames
from relay.publisher import Publisher
from tests.test_relay import Listener


def _py_amqp_bytes(
    channel_id: int,
    frame_max: int,
    exchange: str,
    row: OutboxRow,
    body: bytes,
    mandatory: bool,
    message_id: str,
) -> bytes | None:
    """What py-amqp writes for the message the relay publishes (kombu's `prepare_message`
    properties), or None when it raises."""
    written: list[bytes] = []
    transport = SimpleNamespace(write=lambda data: written.append(bytes(data)))
    write_frame = frame_writer(SimpleNamespace(frame_max=frame_max, bytes_sent=0), transport)
    message = _message(body, row.headers, message_id)
    try:
        args = dumps("Bssbb", (0, exchange, row.destination, mandatory, False))
        write_frame(1, channel_id, spec.Basic.Publish, args, message)
    except Exception:
        return None
    return b"".join(written)


def _message(body: bytes, headers: dict[str, Any], message_id: str) -> Any:
    """The message kombu's `prepare_message` makes of what the relay passes it."""
    return amqp.Message(
        body,
        priority=0,
        content_type=CONTENT_TYPE,
        content_encoding="utf-8",
        application_headers=dict(headers),
        delivery_mode=2,
        message_id=message_id,
    )


_ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates too: AMQP tables pass them
_TEXT = st.text(_ANY_CHARACTER, max_size=20) | st.text(_ANY_CHARACTER, min_size=60, max_size=300)
_SHORT = st.text(_ANY_CHARACTER, max_size=20)
_BIG_HEADER = st.integers(1000, 140_000).map(lambda size: {"note": "\u00e9" * (size // 2)})
_VALUE = _TEXT | st.integers() | st.booleans() | st.none() | st.floats() | st.lists(st.integers())


@settings(max_examples=300, deadline=None)
@given(
    channel_id=st.integers(1, 65535),
    frame_max=st.sampled_from([4096, 131072]),
    exchange=_SHORT | _TEXT,
    destination=_SHORT | _TEXT,
    headers=st.dictionaries(_TEXT, _TEXT, max_size=20)
    | st.dictionaries(_TEXT, _VALUE, max_size=4)
    | _BIG_HEADER,
    body_size=st.integers(0, 300) | st.integers(4000, 4200) | st.integers(130_000, 132_000),
    message_id=_SHORT | _TEXT,
    mandatory=st.booleans(),
)
def test_the_frames_are_py_amqps_bytes_or_left_to_it(
    channel_id: int,
    frame_max: int,
    exchange: str,
    destination: str,
    headers: dict[str, Any],
    body_size: int,
    message_id: str,
    mandatory: bool,
) -> None:
    row = OutboxRow(1, uuid.uuid4(), "t", destination, None, "x" * body_size, headers, 0)
    body = row.payload.encode()
    frames = PublishFrames(channel_id, frame_max, exchange)
    for _ in range(2):  # the second time from the cached method frame
        try:
            ours = frames.encode(row, body, mandatory, message_id)
        except HeadersTooLarge:
            # Right to refuse: py-amqp's header frame would be bigger than a frame may be.
            properties = _message(body, row.headers, message_id)._serialize_properties()
            assert 8 + 12 + len(properties) > frame_max
            event("headers too large")
            continue
        if ours is not None:
            expected = _py_amqp_bytes(
                channel_id, frame_max, exchange, row, body, mandatory, message_id
            )
            assert expected is not None, "encoded a row py-amqp refuses"
            assert ours == expected
            event("encoded here")


def test_the_usual_row_is_encoded_here() -> None:
    """The shape every row sagabox writes has: text headers, a small body."""
    row = _row(1, {"sagabox-type": "bank.Deposited", "sagabox-message-id": "m"})
    assert PublishFrames(1, 131072, "sagabox").encode(row, b"{}", False, "m") is not None


def _row(number: int, headers: dict[str, Any], payload: str | None = None) -> OutboxRow:
    body = payload if payload is not None else json.dumps({"n": number})
    return OutboxRow(
        number, uuid.uuid4(), "bank.Deposited", "bank.Deposited", None, body, headers, 0
    )


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    listener = Listener(amqp_url, "bank.Deposited")
    yield listener
    listener.close()


def test_rows_encoded_here_and_by_py_amqp_arrive_whole_in_order(
    amqp_url: str, listener: Listener
) -> None:
    rows = [
        _row(0, {"sagabox-type": "bank.Deposited", "note": "caf\u00e9"}),
        _row(1, {"sagabox-type": "bank.Deposited", "count": 3}),  # not text: py-amqp's
        _row(2, {"sagabox-type": "bank.Deposited"}, json.dumps({"big": "x" * 200_000})),
        _row(3, {}),
    ]
    with Connection(amqp_url) as connection:
        publisher = Publisher(connection, listener.exchange)
        prepared: list[Any] = []
        prepare = publisher._channel.prepare_message

        def counting(*args: Any) -> Any:
            prepared.append(args)
            return prepare(*args)

        publisher._channel.prepare_message = counting
        try:
            outcome = publisher.publish(rows)
        finally:
            publisher.close()
    assert [] == outcome.failed
    assert [0, 1, 2, 3] == [row.id for row in outcome.confirmed]
    assert 2 == len(prepared)  # the row with a number in its headers, and the one past a frame
    got: list[Any] = listener.fetch()
    assert [str(row.message_id) for row in rows] == [m.properties["message_id"] for m in got]
    assert [row.payload for row in rows] == [m.body for m in got]
    assert [row.headers for row in rows] == [m.headers for m in got]
    assert {(CONTENT_TYPE, "utf-8", 2)} == {
        (m.content_type, m.content_encoding, m.properties["delivery_mode"]) for m in got
    }


def test_a_row_whose_headers_no_frame_holds_fails_alone_and_the_connection_lives(
    amqp_url: str, listener: Listener
) -> None:
    """Headers written by hand past the broker's frame size: RabbitMQ closed the whole
    connection over the frame (`frame_too_large`), so every batch the row was claimed in
    failed. The row now fails alone, for good (dead-lettered), before a byte of it is sent."""
    big = "x" * 200_000
    rows = [
        _row(0, {"sagabox-type": "bank.Deposited"}),
        _row(1, {"sagabox-type": "bank.Deposited", "note": big}),  # encoded here
        _row(2, {"count": 3, "note": big}),  # by py-amqp
        _row(3, {"sagabox-type": "bank.Deposited"}),
    ]
    with Connection(amqp_url) as connection:
        publisher = Publisher(connection, listener.exchange)
        try:
            outcome = publisher.publish(rows)
            again = publisher.publish([_row(4, {})])
        finally:
            publisher.close()
    assert [0, 3] == [row.id for row in outcome.confirmed]
    assert [(1, "unencodable", False), (2, "unencodable", False)] == [
        (failure.row.id, failure.kind, failure.retryable) for failure in outcome.failed
    ]
    assert all("keep large data in the message body" in f.reason for f in outcome.failed)
    assert [4] == [row.id for row in again.confirmed]
    got: list[Any] = listener.fetch()
    assert [str(rows[0].message_id), str(rows[3].message_id)] == [
        m.properties["message_id"] for m in got[:2]
    ]
