"""The errors the outbox layer raises; each message says what the caller can do about it."""

from __future__ import annotations


class SagaboxError(Exception):
    """Something went wrong in sagabox; every sagabox error derives from this one."""

    def __init__(self, message: str | None = None) -> None:
        # The docstring is the default text, so `raise SomeError()` still says something useful.
        super().__init__(message or (self.__doc__ or "").strip())


class OutboxError(SagaboxError):
    """Something went wrong in sagabox's message layer."""


class MessageTypeError(OutboxError):
    """A message class is declared wrongly."""


class DuplicateMessageType(MessageTypeError):
    """Two message classes claim the same type name."""


class UnknownMessageType(OutboxError):
    """No message class is registered under this type name."""


class UnknownMessageVersion(OutboxError):
    """The message type is known, but not at this version."""


class MalformedEnvelope(OutboxError):
    """A message on the wire cannot be read: missing headers, wrong content type or broken JSON."""


class InvalidPayload(OutboxError):
    """A message's payload does not validate against its class."""


class UnsupportedDatabase(OutboxError):
    """sagabox does not support this database dialect."""


class MessageTooLarge(OutboxError):
    """A message is over sagabox's size limit: send a reference to the data, or raise the limit."""


class UnstorableText(OutboxError, ValueError):
    """A message's type, destination, partition key or header is text its outbox column (or, for
    a header name, AMQP) cannot hold, or its fields cannot be written as JSON."""


class Misconfigured(SagaboxError):
    """sagabox cannot start with these settings; the message says what to fix (waiting will not)."""


class MissingTables(Misconfigured, OutboxError):
    """The database has no sagabox tables: run `sagabox db upgrade` against it first."""


class AsyncSessionGiven(OutboxError, TypeError):
    """A synchronous sagabox API was given an AsyncSession or AsyncConnection; use sagabox.aio."""
