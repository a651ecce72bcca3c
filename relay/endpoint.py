"""What a worker serves and reports: the `Endpoint` protocol, deliveries, outcomes, counters.

Kept apart from the worker's two halves (the broker loop in `relay.worker`, the handling of
one delivery in `relay.processing`) so that both, and the tests, share one vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from outbox.inbox import Inbox
from outbox.messages import Message
from outbox.registry import MessageRegistry

#: How the worker finished with a delivery. `dropped`: it came through a binding this endpoint
#: no longer declares (an event nobody here handles any more), so it is counted, not kept.
Outcome = Literal["handled", "duplicate", "retry_scheduled", "dead_lettered", "dropped"]


class Unrecoverable(Exception):
    """Raise from a handler when retrying cannot help: the message is dead-lettered at once."""


class Endpoint(Protocol):
    """What a worker serves: its name (queue and inbox), its message types, and their handling."""

    @property
    def name(self) -> str: ...

    @property
    def registry(self) -> MessageRegistry: ...

    def routing_keys(self) -> list[str]:
        """The routing keys its queue binds: its own name (for commands) and event type names."""
        ...

    def accepts(self, type_name: str) -> bool:
        """Whether some handler here takes this message type."""
        ...

    def dispatch(self, session: Session, message: Message) -> None:
        """Run every handler for `message` in `session`'s transaction, without committing."""
        ...

    def begin_batch(self, session: Session, messages: Sequence[Message]) -> None:
        """Get ready to dispatch `messages` one after the other in `session`'s transaction
        (a saga runtime locks and reads their rows at once, and defers their writes)."""
        ...


@runtime_checkable
class RecordingEndpoint(Protocol):
    """An endpoint that records a message in the inbox itself, as it dispatches it.

    Optional: a worker calls `dispatch_new` instead of `Inbox.record` then `dispatch` on an
    endpoint that has it, so that the endpoint can send the inbox insert together with its own
    first read (the saga runtime does, on PostgreSQL).
    """

    def dispatch_new(self, session: Session, message: Message, inbox: Inbox) -> bool:
        """Record `message.message_id` in `inbox` and, if it is new, dispatch `message` in
        `session`'s transaction; False (nothing dispatched) if it was recorded before."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing message is tried before it is dead-lettered.

    `retry_at_once` errors (such as an optimistic concurrency conflict) are retried up to
    `immediate` times without delay; any other error schedules one delayed retry per entry of
    `delays`. Dropped database connections are always retried at once.
    """

    immediate: int = 5
    delays: tuple[timedelta, ...] = (
        timedelta(seconds=1),
        timedelta(seconds=10),
        timedelta(seconds=60),
    )
    retry_at_once: tuple[type[BaseException], ...] = ()


_COUNTERS: dict[str, str] = {
    "handled": "handled",
    "duplicate": "duplicates",
    "retry_scheduled": "retried",
    "dead_lettered": "dead_lettered",
    "dropped": "dropped",
}


@dataclass
class WorkerStats:
    """Counters since the worker started."""

    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    #: Events that came through a binding the endpoint no longer declares (see `Outcome`).
    dropped: int = 0
    requeued: int = 0
    #: Retries in place after a transient error (a concurrency conflict, say); the first
    #: attempt is not one.
    retried_at_once: int = 0
    #: Deliveries the broker flagged as redelivered (an earlier delivery went unacknowledged).
    redelivered: int = 0
    #: Batches whose shared transaction failed, so that their messages were handled one by one.
    batches_redone: int = 0

    def count(self, outcome: Outcome) -> None:
        attribute = _COUNTERS[outcome]
        setattr(self, attribute, getattr(self, attribute) + 1)


@dataclass(frozen=True)
class Delivery:
    """A message as the broker handed it over, before anything trusts it.

    `routing_key` is the key it was published with (None if the transport does not say);
    `undecodable` names the AMQP properties that were not UTF-8 (see `relay.amqp_properties`);
    `unreadable` says why the broker client could not read the message (None: it could).
    """

    body: bytes
    headers: Mapping[str, Any] | None
    content_type: str | None
    routing_key: str | None = None
    undecodable: tuple[str, ...] = ()
    unreadable: str | None = None
