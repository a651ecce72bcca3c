"""sagabox's message layer: messages, the outbox and inbox tables, and the one clock.

It knows nothing of sagas or brokers; `sagas` and `relay` build on it.
"""

from __future__ import annotations

from outbox import clock
from outbox.database import configure_sqlite, make_engine
from outbox.envelope import CONTENT_TYPE, Envelope, decode, encode
from outbox.errors import (
    AsyncSessionGiven,
    DuplicateMessageType,
    InvalidPayload,
    MalformedEnvelope,
    MessageTypeError,
    OutboxError,
    SagaboxError,
    UnknownMessageType,
    UnknownMessageVersion,
    UnsupportedDatabase,
)
from outbox.faults import Faulted
from outbox.handlers import HandlerContext, ReplyImpossible, handles
from outbox.inbox import Inbox, prune_inbox
from outbox.messages import Command, Event, Message
from outbox.notify import notify_trigger, set_notify_trigger
from outbox.registry import MessageRegistry, default_registry
from outbox.tables import metadata
from outbox.urls import mask_secrets
from outbox.writer import Outbox

__all__ = [
    "CONTENT_TYPE",
    "AsyncSessionGiven",
    "Command",
    "DuplicateMessageType",
    "Envelope",
    "Event",
    "Faulted",
    "HandlerContext",
    "Inbox",
    "InvalidPayload",
    "MalformedEnvelope",
    "Message",
    "MessageRegistry",
    "MessageTypeError",
    "Outbox",
    "OutboxError",
    "ReplyImpossible",
    "SagaboxError",
    "UnknownMessageType",
    "UnknownMessageVersion",
    "UnsupportedDatabase",
    "clock",
    "configure_sqlite",
    "decode",
    "default_registry",
    "encode",
    "handles",
    "make_engine",
    "mask_secrets",
    "metadata",
    "notify_trigger",
    "prune_inbox",
    "set_notify_trigger",
]
