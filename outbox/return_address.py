"""Return addresses: the headers that route replies and faults back to the saga that sent a command.

A saga's request (and a command whose fault it watches) carries where answers go: the endpoint
(`sagabox-reply-to`, `sagabox-fault-to`) and the sending saga (`sagabox-origin-saga`,
`sagabox-origin-saga-id`). The reply or fault going back names the saga it is for
(`sagabox-to-saga`, `sagabox-to-saga-id`) and the message it answers (`sagabox-in-reply-to`),
so the receiving runtime routes it to that instance without any correlation mapping, as
NServiceBus's ReplyToAddress and saga id headers do.

Headers come from the wire: `check` refuses malformed ones when a delivery is read (the worker
dead-letters it with the reason), and every parser here trusts nothing it is given. Messages
decoded from the wire remember their headers (`wire_headers`), so handlers can answer them.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from outbox.errors import MalformedEnvelope
from outbox.messages import Message

H_REPLY_TO = "sagabox-reply-to"
H_FAULT_TO = "sagabox-fault-to"
H_ORIGIN_SAGA = "sagabox-origin-saga"
H_ORIGIN_SAGA_ID = "sagabox-origin-saga-id"
H_TO_SAGA = "sagabox-to-saga"
H_TO_SAGA_ID = "sagabox-to-saga-id"
H_IN_REPLY_TO = "sagabox-in-reply-to"

#: Every header this module owns; `check` validates whichever of them a delivery carries.
HEADERS = (
    H_REPLY_TO,
    H_FAULT_TO,
    H_ORIGIN_SAGA,
    H_ORIGIN_SAGA_ID,
    H_TO_SAGA,
    H_TO_SAGA_ID,
    H_IN_REPLY_TO,
)
_ENDPOINTS = (H_REPLY_TO, H_FAULT_TO)
_IDS = (H_ORIGIN_SAGA_ID, H_TO_SAGA_ID, H_IN_REPLY_TO)
_SAGA_TYPES = (H_ORIGIN_SAGA, H_TO_SAGA)
# As `App` allows endpoint names: they become queue names and routing keys.
_ENDPOINT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
_MAX_SAGA_TYPE = 200


@dataclass(frozen=True)
class ReturnAddress:
    """Where an answer to a message goes: an endpoint, and the saga instance there."""

    endpoint: str
    saga_type: str
    saga_id: UUID

    def headers_for_answer(self, answered: UUID) -> dict[str, str]:
        """The headers of a reply or fault to the message `answered`."""
        return {
            H_TO_SAGA: self.saga_type,
            H_TO_SAGA_ID: str(self.saga_id),
            H_IN_REPLY_TO: str(answered),
        }


@dataclass(frozen=True)
class Addressee:
    """The saga instance a reply or fault names, and the message it answers."""

    saga_type: str
    saga_id: UUID
    in_reply_to: UUID


def sender_headers(
    endpoint: str, saga_type: str, saga_id: UUID, *, reply: bool, fault: bool
) -> dict[str, str]:
    """The headers a saga's outgoing command carries so that replies and/or faults come back."""
    headers = {H_ORIGIN_SAGA: saga_type, H_ORIGIN_SAGA_ID: str(saga_id)}
    if reply:
        headers[H_REPLY_TO] = endpoint
    if fault:
        headers[H_FAULT_TO] = endpoint
    return headers


def check(headers: Mapping[str, Any]) -> None:
    """Refuse a delivery whose return-address headers are malformed (`MalformedEnvelope`).

    Each header present must be well formed, and the ones that only mean something together
    must come together; a message carrying none of them is not concerned.
    """
    present = [name for name in HEADERS if name in headers]
    if not present:
        return
    for name in present:
        value = headers[name]
        if not isinstance(value, str):
            raise MalformedEnvelope(f"header {name} must be text, got {type(value).__name__}")
        if name in _ENDPOINTS and not _ENDPOINT.match(value):
            raise MalformedEnvelope(
                f"header {name} is not an endpoint name (letters, digits, '_', '.', '-'): "
                f"{value[:80]!r}"
            )
        if name in _IDS:
            _parse_uuid(name, value)
        if name in _SAGA_TYPES and not (0 < len(value) <= _MAX_SAGA_TYPE and value.isprintable()):
            raise MalformedEnvelope(
                f"header {name} is not a saga type name (1 to {_MAX_SAGA_TYPE} printable "
                f"characters): {value[:80]!r}"
            )
    if (H_REPLY_TO in headers or H_FAULT_TO in headers) and not (
        H_ORIGIN_SAGA in headers and H_ORIGIN_SAGA_ID in headers
    ):
        raise MalformedEnvelope(
            f"headers {H_REPLY_TO}/{H_FAULT_TO} need {H_ORIGIN_SAGA} and {H_ORIGIN_SAGA_ID} "
            "beside them: a return address must name the saga to answer"
        )
    addressed = [name for name in (H_TO_SAGA, H_TO_SAGA_ID, H_IN_REPLY_TO) if name in headers]
    if addressed and len(addressed) != 3:
        raise MalformedEnvelope(
            f"a reply or fault needs all of {H_TO_SAGA}, {H_TO_SAGA_ID} and {H_IN_REPLY_TO}; "
            f"it carries only {', '.join(addressed)}"
        )


def addressee(headers: Mapping[str, Any]) -> Addressee | None:
    """The saga a reply or fault is for, or None when the headers name none (not an answer).

    Raises `MalformedEnvelope` for malformed headers, as `check` does.
    """
    check(headers)
    if H_TO_SAGA not in headers:
        return None
    return Addressee(
        saga_type=headers[H_TO_SAGA],
        saga_id=_parse_uuid(H_TO_SAGA_ID, headers[H_TO_SAGA_ID]),
        in_reply_to=_parse_uuid(H_IN_REPLY_TO, headers[H_IN_REPLY_TO]),
    )


def return_address(headers: Mapping[str, Any], kind: str) -> ReturnAddress | None:
    """Where to send a reply (`kind="reply"`) or a fault (`kind="fault"`) to the message with
    these headers; None when its sender asked for none, or the headers are malformed."""
    name = H_REPLY_TO if kind == "reply" else H_FAULT_TO
    try:
        check(headers)
    except MalformedEnvelope:
        return None
    endpoint = headers.get(name)
    if endpoint is None:
        return None
    return ReturnAddress(
        endpoint=endpoint,
        saga_type=headers[H_ORIGIN_SAGA],
        saga_id=_parse_uuid(H_ORIGIN_SAGA_ID, headers[H_ORIGIN_SAGA_ID]),
    )


# --- the headers a decoded message arrived with ------------------------------------------------

# Keyed by the object's id and dropped when it is collected: equal messages stay equal (the
# headers are not a field), and nothing outlives the message it belongs to.
_WIRE_HEADERS: dict[int, Mapping[str, str]] = {}


def remember_headers(message: Message, headers: Mapping[str, str]) -> None:
    """Note the headers `message` was decoded from (called by `outbox.envelope.decode`)."""
    key = id(message)
    _WIRE_HEADERS[key] = dict(headers)
    weakref.finalize(message, _WIRE_HEADERS.pop, key, None)


def wire_headers(message: Message) -> Mapping[str, str]:
    """The headers `message` arrived with; empty for a message built in this process."""
    return _WIRE_HEADERS.get(id(message), {})


def _parse_uuid(name: str, value: Any) -> UUID:
    try:
        return UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise MalformedEnvelope(f"header {name} is not a UUID: {str(value)[:80]!r}") from None
