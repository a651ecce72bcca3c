"""Message classes, the type registry and the JSON envelope."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from outbox import (
    CONTENT_TYPE,
    DuplicateMessageType,
    Envelope,
    Event,
    InvalidPayload,
    MalformedEnvelope,
    MessageRegistry,
    MessageTypeError,
    UnknownMessageType,
    UnknownMessageVersion,
    decode,
    encode,
)
from outbox.envelope import H_MESSAGE_ID, H_TYPE, H_VERSION
from tests.messages_fixture import LoanRequested, RunCreditCheck


def _loan(**overrides: Any) -> LoanRequested:
    fields: dict[str, Any] = {"loan_id": "L-1", "amount": Decimal("2500.00"), "applicant": "Ada"}
    return LoanRequested(**(fields | overrides))


def test_message_gets_identity_time_and_registered_type() -> None:
    """A new message has a UUID, an aware UTC time, and its class's stable type and version."""
    message = _loan()
    assert message.occurred_at.utcoffset() == timedelta(0)
    assert ("tests.LoanRequested", 1) == (message.type_name, message.type_version)
    assert ("tests.RunCreditCheck", 2) == (RunCreditCheck.type_name, RunCreditCheck.type_version)
    assert message.message_id != _loan().message_id


def test_envelope_round_trip_keeps_every_field() -> None:
    """Encoding then decoding gives an equal message: payload, ids, time and causality."""
    cause = _loan(correlation_id="loan-L-1")
    command = RunCreditCheck(loan_id="L-1", applicant="Ada", bureau="acme").caused_by(cause)
    envelope = encode(command, extra_headers={"traceparent": "00-abc-def-01"})

    assert "message_id" not in json.loads(envelope.payload)
    assert "00-abc-def-01" == envelope.headers["traceparent"]
    decoded = decode(envelope)
    assert command == decoded
    assert ("loan-L-1", cause.message_id) == (decoded.correlation_id, decoded.causation_id)


def test_envelope_from_the_wire_round_trip() -> None:
    """What a broker delivers (bytes, headers, content type) decodes to the sent message."""
    message = _loan()
    envelope = encode(message)
    received = Envelope.from_wire(envelope.payload.encode(), envelope.headers, CONTENT_TYPE)
    assert message == decode(received)


def test_duplicate_type_name_is_refused_with_advice() -> None:
    """A second class claiming a type name is an error that names both and says what to do."""
    with pytest.raises(DuplicateMessageType, match=r"tests\.LoanRequested.*own name"):

        class Impostor(Event, type="tests.LoanRequested"):
            loan_id: str


def test_private_registry_keeps_types_apart() -> None:
    """A class registered in its own registry is unknown to the default one."""
    registry = MessageRegistry()

    class Private(Event, type="tests.Private", registry=registry):
        n: int

    message = Private(n=3)
    assert message == decode(encode(message), registry)
    with pytest.raises(UnknownMessageType, match=r"tests\.Private.*import the module"):
        decode(encode(message))


def test_bad_type_names_and_versions_are_refused() -> None:
    """Type names become routing keys, so only dotted identifiers are allowed; versions are >= 1."""
    registry = MessageRegistry()
    with pytest.raises(MessageTypeError, match="dotted identifiers"):

        class Spaced(Event, type="has space", registry=registry):
            pass

    with pytest.raises(MessageTypeError, match="version must be"):

        class Zero(Event, type="tests.Zero", version=0, registry=registry):
            pass


def test_abstract_message_cannot_be_encoded() -> None:
    """`Event` itself has no type name; sending one is a mistake caught at once."""
    with pytest.raises(TypeError, match="abstract"):
        encode(Event())


def test_invalid_payload_names_the_field() -> None:
    """A payload that fails validation raises InvalidPayload naming the type and the field."""
    envelope = encode(_loan())
    broken = Envelope(envelope.type, envelope.version, '{"loan_id": "L-1"}', envelope.headers)
    with pytest.raises(InvalidPayload, match=r"tests\.LoanRequested v1.*amount: Field required"):
        decode(broken)


def _headers(kind: str) -> dict[str, str] | None:
    good = encode(_loan()).headers
    return {
        "valid": good,
        "none": None,
        "type-only": {H_TYPE: "tests.LoanRequested"},
        "bad-version": good | {H_VERSION: "one"},
        "bad-id": good | {H_MESSAGE_ID: "not-a-uuid"},
    }[kind]


@pytest.mark.parametrize(
    ("body", "headers", "content_type", "reason"),
    [
        (pickle.dumps({"x": 1}), "valid", "application/x-python-serialize", "content type"),
        (b"{}", "none", CONTENT_TYPE, "no headers"),
        (b"{}", "type-only", CONTENT_TYPE, "missing or non-string"),
        (b"\xff\xfe", "valid", CONTENT_TYPE, "not UTF-8"),
        (b"{}", "bad-version", CONTENT_TYPE, "not an integer"),
        (b"{}", "bad-id", CONTENT_TYPE, "not a UUID"),
    ],
)
def test_malformed_wire_messages_are_refused(
    body: bytes, headers: str, content_type: str, reason: str
) -> None:
    """Pickle, missing headers, non-UTF-8 bodies and forged ids are refused before decoding."""
    with pytest.raises(MalformedEnvelope, match=reason):
        Envelope.from_wire(body, _headers(headers), content_type)


def test_metadata_in_payload_is_refused() -> None:
    """A payload may not smuggle in a message id or correlation: those travel in headers only."""
    envelope = encode(_loan())
    forged = json.loads(envelope.payload) | {"message_id": str(uuid4())}
    with pytest.raises(MalformedEnvelope, match="belong in headers"):
        decode(Envelope(envelope.type, 1, json.dumps(forged), envelope.headers))


@pytest.mark.parametrize("payload", ["not json", "[1, 2]"])
def test_non_object_payload_is_malformed(payload: str) -> None:
    """Broken JSON or a JSON value that is not an object is a MalformedEnvelope."""
    envelope = encode(_loan())
    with pytest.raises(MalformedEnvelope):
        decode(Envelope(envelope.type, 1, payload, envelope.headers))


def test_upcasters_bring_old_versions_forward() -> None:
    """A v1 payload is upcast through each registered step to the class's current version."""
    registry = MessageRegistry()

    class Offer(Event, type="tests.Offer", version=3, registry=registry):
        amount_cents: int
        currency: str

    @registry.upcaster("tests.Offer", from_version=1)
    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {"amount_cents": round(payload.pop("amount") * 100)} | payload

    @registry.upcaster("tests.Offer", from_version=2)
    def v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
        return payload | {"currency": "EUR"}

    current = encode(Offer(amount_cents=1250, currency="EUR"))
    old = Envelope("tests.Offer", 1, '{"amount": 12.5}', current.headers)
    decoded = decode(old, registry)
    assert isinstance(decoded, Offer)
    assert (1250, "EUR") == (decoded.amount_cents, decoded.currency)

    with pytest.raises(UnknownMessageVersion, match="deploy the newer"):
        decode(Envelope("tests.Offer", 4, "{}", current.headers), registry)
    registry_without_steps = MessageRegistry()

    class Offer2(Event, type="tests.Offer", version=2, registry=registry_without_steps):
        amount_cents: int

    with pytest.raises(UnknownMessageVersion, match=r"upcaster\('tests.Offer', from_version=1\)"):
        decode(old, registry_without_steps)


def test_occurred_at_must_be_aware() -> None:
    """A naive timestamp is refused: its meaning would depend on the machine's zone."""
    with pytest.raises(ValueError, match="timezone"):
        _loan(occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    eastern = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert (
        datetime(2026, 1, 1, 17, tzinfo=UTC)
        == decode(encode(_loan(occurred_at=eastern))).occurred_at
    )
