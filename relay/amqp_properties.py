"""Reading AMQP message properties that are not UTF-8 without killing the connection.

py-amqp decodes a delivery's properties (content type, message id, headers...) inside
`drain_events`, strictly: a publisher that puts non-UTF-8 bytes in `content_type` or
`message_id` (or in a header name, or nests a header table past Python's recursion limit) makes
it raise there, mid-frame. The connection is then unusable, the message is redelivered, and
every consumer of the queue dies on it in turn. py-amqp has no hook for this, so `install()`
wraps its one table entry for basic properties: the strict decoder runs as before, and only
when it raises does a tolerant one read the same bytes, keeping undecodable strings escaped
(`surrogateescape`) and naming them under `UNDECODABLE`, so the worker can dead-letter that
one message like any other bad input.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from struct import unpack_from
from typing import Any

#: The property naming what could not be decoded (a list of property names), when anything.
UNDECODABLE = "x-sagabox-undecodable"

# Basic properties in wire order: (flag bit, name, kind); see AMQP 0-9-1 §4.2.6 and
# amqp.basic_message.Message.PROPERTIES.
_BASIC: tuple[tuple[int, str, str], ...] = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "application_headers", "F"),
    (0x1000, "delivery_mode", "B"),
    (0x0800, "priority", "B"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "Q"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)

_lock = threading.Lock()
_installed = False

Decoder = Callable[[Any, int], tuple[dict[str, Any], int]]


def install() -> None:
    """Make py-amqp's basic-properties decoding tolerant (idempotent, process-wide)."""
    global _installed
    with _lock:
        if _installed:
            return
        from amqp import serialization
        from amqp.spec import Basic

        strict: Decoder = serialization.PROPERTY_CLASSES[Basic.CLASS_ID]

        def decode(buf: Any, offset: int) -> tuple[dict[str, Any], int]:
            try:
                return strict(buf, offset)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                return decode_tolerantly(buf, offset)

        serialization.PROPERTY_CLASSES[Basic.CLASS_ID] = decode
        _installed = True


def decode_tolerantly(buf: Any, offset: int) -> tuple[dict[str, Any], int]:
    """Decode basic properties whatever their bytes; list what was not text under UNDECODABLE.

    A header table that cannot be read is replaced by an empty one (its bytes are skipped by
    their length prefix); the message then fails the worker's envelope check, as it should.
    """
    from amqp.serialization import loads

    properties: dict[str, Any] = {}
    undecodable: list[str] = []
    (flags,) = unpack_from(">H", buf, offset)
    offset += 2
    for bit, name, kind in _BASIC:
        if not flags & bit:
            continue
        if kind == "s":
            (length,) = unpack_from(">B", buf, offset)
            offset += 1
            raw = bytes(buf[offset : offset + length])
            offset += length
            try:
                properties[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                properties[name] = raw.decode("utf-8", "surrogateescape")
                undecodable.append(name)
        elif kind == "F":
            (length,) = unpack_from(">I", buf, offset)
            try:
                (table,), _end = loads("F", buf, offset)
            except (ValueError, RecursionError):
                table = {}
                undecodable.append(name)
            properties[name] = table
            offset += 4 + length
        else:
            (properties[name],) = unpack_from(f">{kind}", buf, offset)
            offset += 1 if kind == "B" else 8
    if undecodable:
        properties[UNDECODABLE] = undecodable
    return properties, offset
