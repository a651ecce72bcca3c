"""The wire format: a message as JSON payload plus string headers, and back again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from outbox.errors import InvalidPayload, MalformedEnvelope, OutboxError, UnstorableText
from outbox.limits import has_lone_surrogate
from outbox.messages import META_FIELDS, Message
from outbox.registry import MessageRegistry, default_registry
from outbox.return_address import remember_headers

CONTENT_TYPE = "application/json"

H_TYPE = "sagabox-type"
H_VERSION = "sagabox-version"
H_MESSAGE_ID = "sagabox-message-id"
H_OCCURRED_AT = "sagabox-occurred-at"
H_CORRELATION_ID = "sagabox-correlation-id"
H_CAUSATION_ID = "sagabox-causation-id"

_REQUIRED = (H_TYPE, H_VERSION, H_MESSAGE_ID, H_OCCURRED_AT)
_META_HEADERS = {
    "message_id": H_MESSAGE_ID,
    "occurred_at": H_OCCURRED_AT,
    "correlation_id": H_CORRELATION_ID,
    "causation_id": H_CAUSATION_ID,
}


@dataclass(frozen=True)
class Envelope:
    """A message as it is stored in the outbox and sent: type, version, JSON payload, headers.

    `headers` holds the message metadata (id, time, correlation, causation) and anything extra a
    caller adds, such as trace context; every value is a string.
    """

    type: str
    version: int
    payload: str
    headers: dict[str, str] = field(default_factory=dict)

    @cached_property
    def message_id(self) -> UUID:
        """The message id carried in the headers (parsed once: the worker asks for it at every
        step of a message's handling)."""
        return _uuid(self.headers, H_MESSAGE_ID)

    @classmethod
    def from_wire(
        cls, body: bytes | str, headers: Mapping[str, Any] | None, content_type: str | None
    ) -> Envelope:
        """Check what a broker delivered and wrap it; anything off raises `MalformedEnvelope`.

        Only JSON is accepted: other content types (pickle above all) are refused unread.
        """
        if content_type != CONTENT_TYPE:
            raise MalformedEnvelope(
                f"content type {content_type!r} refused: sagabox only reads {CONTENT_TYPE}"
            )
        if not isinstance(headers, Mapping):
            raise MalformedEnvelope("the message has no headers: it was not sent by sagabox")
        missing = [name for name in _REQUIRED if not isinstance(headers.get(name), str)]
        if missing:
            raise MalformedEnvelope(f"missing or non-string headers: {', '.join(missing)}")
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedEnvelope(f"the body is not UTF-8 text: {exc}") from exc
        try:
            version = int(headers[H_VERSION])
        except ValueError:
            raise MalformedEnvelope(
                f"header {H_VERSION} is not an integer: {headers[H_VERSION]!r}"
            ) from None
        text_headers = {str(k): v for k, v in headers.items() if isinstance(v, str)}
        for name, value in text_headers.items():
            if not (_is_text(name) and _is_text(value)):
                # py-amqp decodes headers with `surrogatepass`, so broken bytes arrive as lone
                # surrogates; no database column, JSON document or log line can hold them.
                raise MalformedEnvelope(
                    f"header {name!r} is not valid UTF-8 text (a lone surrogate or a NUL "
                    "character): fix the sender"
                )
        envelope = cls(type=headers[H_TYPE], version=version, payload=body, headers=text_headers)
        envelope.message_id  # noqa: B018 - validates the id header now, before anything runs
        return envelope


def encode(message: Message, *, extra_headers: Mapping[str, str] | None = None) -> Envelope:
    """Turn a message into its envelope: business fields as the payload, metadata as headers."""
    if not message.type_name:
        raise TypeError(f"{type(message).__qualname__} is abstract and cannot be sent")
    headers = dict(extra_headers or {})
    headers[H_TYPE] = message.type_name
    headers[H_VERSION] = str(message.type_version)
    headers[H_MESSAGE_ID] = str(message.message_id)
    headers[H_OCCURRED_AT] = message.occurred_at.isoformat()
    if message.correlation_id is not None:
        headers[H_CORRELATION_ID] = message.correlation_id
    if message.causation_id is not None:
        headers[H_CAUSATION_ID] = str(message.causation_id)
    try:
        payload = message.model_dump_json(exclude=set(META_FIELDS))
    except PydanticSerializationError as exc:
        # A lone surrogate (no JSON text can hold one) or data nested past pydantic's limit.
        # A `ValueError` a worker dead-letters at once: the same message would emit it again.
        raise UnstorableText(
            f"{message.type_name}: its fields cannot be written as JSON ({exc}): a string "
            "holds a lone surrogate (text decoded with errors='surrogateescape', say), or the "
            "data nests too deep; fix the value before sending it"
        ) from exc
    return Envelope(message.type_name, message.type_version, payload, headers)


def decode(envelope: Envelope, registry: MessageRegistry = default_registry) -> Message:
    """Rebuild the message an envelope carries, upcasting older versions on the way."""
    cls = registry.resolve(envelope.type)
    try:
        payload = json.loads(envelope.payload)
    except (ValueError, RecursionError) as exc:
        # Not only JSONDecodeError: nesting too deep raises RecursionError, and an integer of
        # thousands of digits ValueError (Python's int_max_str_digits).
        raise MalformedEnvelope(
            f"{envelope.type}: the payload is not JSON sagabox can read "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if not isinstance(payload, dict):
        raise MalformedEnvelope(f"{envelope.type}: the payload must be a JSON object")
    forged = META_FIELDS.intersection(payload)
    if forged:
        # Metadata only travels in headers; a payload carrying it is trying to override them.
        raise MalformedEnvelope(
            f"{envelope.type}: metadata fields {sorted(forged)} belong in headers, not the payload"
        )
    try:
        payload = registry.upcast(envelope.type, envelope.version, payload)
    except OutboxError:
        raise
    except Exception as exc:
        raise InvalidPayload(
            f"{envelope.type} v{envelope.version}: an upcaster raised {type(exc).__name__}: "
            f"{str(exc)[:200]}. Fix the upcaster, or the sender"
        ) from exc
    for field_name, header in _META_HEADERS.items():
        if header in envelope.headers:
            payload[field_name] = envelope.headers[header]
    try:
        message = cls.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidPayload(
            f"{envelope.type} v{envelope.version} (message {envelope.headers.get(H_MESSAGE_ID)}) "
            f"does not validate: {problems}. Fix the sender, or register an upcaster if the "
            "schema changed"
        ) from exc
    remember_headers(message, envelope.headers)  # a handler may answer it (`ctx.reply`)
    return message


def _is_text(value: str) -> bool:
    """Whether `value` can be stored and printed as it is: UTF-8 encodable, without NUL."""
    return "\x00" not in value and not has_lone_surrogate(value)


def _uuid(headers: Mapping[str, str], name: str) -> UUID:
    try:
        return UUID(headers[name])
    except (KeyError, ValueError):
        raise MalformedEnvelope(f"header {name} is missing or not a UUID") from None
