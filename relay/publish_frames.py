"""The bytes of one `basic.publish` for an outbox row, written to py-amqp's socket directly.

py-amqp builds each message's frames in general-purpose Python: its property and field-table
encoder walks every property and header through a type switch. That was most of the relay's
CPU: per 10,000 messages a bare kombu loop spent 0.24-0.29 s of it, the same loop writing these
frames 0.04-0.05 s (bench (c), `bench/results/2026-12-03-session14.md`). An outbox row has one
usual shape: fixed content type and encoding, a persistent delivery mode, a message id and a
table of text headers. `encode` writes that shape's frames with a few joins, byte for byte
what py-amqp would send (a property test holds the two together,
`tests/test_publish_frames.py`), and gives None for anything else (a header that is not text,
a name too long for AMQP, a body bigger than one frame): such a row goes through py-amqp as
before, and fails there if it must.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from amqp.exceptions import RecoverableConnectionError

from outbox.claim import OutboxRow
from outbox.envelope import CONTENT_TYPE

#: basic.publish (class 60, method 40) and the content header's class and weight.
_METHOD = Struct(">BHIHHH")  # frame type, channel, size; class, method, reserved ticket
_HEADER = Struct(">BHIHHQH")  # frame type, channel, size; class, weight, body size, flags
_FRAME = Struct(">BHI")
_LONG = Struct(">I")
_END = b"\xce"
# Content type, content encoding, headers, delivery mode, priority, message id: the properties
# the relay sets, as py-amqp flags them (amqp.basic_message.Message.PROPERTIES order).
_FLAGS = 0x8000 | 0x4000 | 0x2000 | 0x1000 | 0x0800 | 0x0080
_TYPE_AND_ENCODING = bytes([len(CONTENT_TYPE)]) + CONTENT_TYPE.encode() + b"\x05utf-8"
_PERSISTENT_PRIORITY_0 = b"\x02\x00"
#: How many (exchange, routing key, mandatory) method frames are kept; a relay sends to a
#: handful of destinations, so the cache is cleared rather than evicted when it fills.
_METHODS_KEPT = 1024


class HeadersTooLarge(ValueError):
    """A message's properties (its headers, mostly) are bigger than one frame, where AMQP has
    them travel: a broker sent such a frame closes the whole connection (`frame_too_large`),
    so the row must not be sent at all."""


def check_header_fits(properties_size: int, frame_max: int) -> None:
    """Raise `HeadersTooLarge` unless a content header of `properties_size` bytes of
    properties (flags included) fits in one frame of at most `frame_max` bytes."""
    size = 8 + 12 + properties_size  # frame header and end, class, weight, body size
    if size > frame_max:
        raise HeadersTooLarge(
            f"its headers take {size:,} bytes, more than the broker's frame size "
            f"({frame_max:,} bytes) allows: AMQP sends them in one frame; keep large data in "
            f"the message body"
        )


class PublishFrames:
    """Encodes rows as py-amqp would for one channel (`channel_id`) of a connection whose
    frames may be at most `frame_max` bytes."""

    def __init__(self, channel_id: int, frame_max: int, exchange: str) -> None:
        self._channel_id = channel_id
        self._frame_max = frame_max
        try:
            self._exchange: bytes | None = _shortstr(exchange)
        except ValueError:
            self._exchange = None  # a name AMQP cannot hold: every row goes through py-amqp
        self._methods: dict[tuple[str, bool], bytes] = {}

    def publish(
        self, connection: Any, row: OutboxRow, body: bytes, mandatory: bool, message_id: str
    ) -> bool:
        """Write `row`'s frames to py-amqp's `connection` (through its transport, so that
        `relay.coalesced_writes` gathers them); False, and nothing written, when py-amqp must
        encode the row (see `encode`)."""
        frames = self.encode(row, body, mandatory, message_id)
        if frames is None:
            return False
        if connection is None:
            raise RecoverableConnectionError("basic_publish: connection closed")
        connection.transport.write(frames)
        connection.bytes_sent += 1  # what py-amqp counts, for its heartbeats
        return True

    def check_header_fits(self, properties_size: int) -> None:
        """`check_header_fits` for this connection's frames."""
        check_header_fits(properties_size, self._frame_max)

    def encode(self, row: OutboxRow, body: bytes, mandatory: bool, message_id: str) -> bytes | None:
        """The method, header and body frames publishing `body` for `row`, or None when the
        row is not of the shape encoded here (py-amqp then encodes it); `HeadersTooLarge`
        for a row whose headers no frame can hold."""
        if self._exchange is None:
            return None
        try:
            method = self._methods.get((row.destination, mandatory))
            if method is None:
                method = self._method(row.destination, mandatory)
            table = _text_table(row.headers)
            if table is None:
                return None
            properties = b"".join(
                (
                    _TYPE_AND_ENCODING,
                    _LONG.pack(len(table)),
                    table,
                    _PERSISTENT_PRIORITY_0,
                    _shortstr(message_id),
                )
            )
        except (ValueError, OverflowError):
            return None  # a name AMQP cannot hold: py-amqp raises its own error for it
        check_header_fits(2 + len(properties), self._frame_max)
        header_size = 14 + len(properties)
        # py-amqp's test for "fits in one write": its own estimate of the frames' size.
        if len(method) + len(properties) + len(body) + 40 > self._frame_max - 8:
            return None
        channel = self._channel_id
        parts = [
            method,
            _HEADER.pack(2, channel, header_size, 60, 0, len(body), _FLAGS),
            properties,
            _END,
        ]
        if body:
            parts += (_FRAME.pack(3, channel, len(body)), body, _END)
        return b"".join(parts)

    def _method(self, routing_key: str, mandatory: bool) -> bytes:
        assert self._exchange is not None
        args = self._exchange + _shortstr(routing_key) + (b"\x01" if mandatory else b"\x00")
        frame = _METHOD.pack(1, self._channel_id, 6 + len(args), 60, 40, 0) + args + _END
        if len(self._methods) >= _METHODS_KEPT:
            self._methods.clear()
        self._methods[(routing_key, mandatory)] = frame
        return frame


def _shortstr(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return bytes((len(data),)) + data  # ValueError past 255 bytes


def _text_table(headers: dict[str, Any]) -> bytes | None:
    """An AMQP field table of text values (type `S`), or None when a value is not text."""
    parts: list[bytes] = []
    for key, value in headers.items():
        if type(key) is not str or type(value) is not str:
            return None
        name = key.encode("utf-8", "surrogatepass")
        data = value.encode("utf-8", "surrogatepass")
        parts += (bytes((len(name),)), name, b"S", _LONG.pack(len(data)), data)
    return b"".join(parts)
