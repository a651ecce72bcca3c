"""The errors the saga layer raises; each names the saga type, id and state involved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from outbox.errors import SagaboxError


class SagaError(SagaboxError):
    """Something went wrong in a saga."""


class SagaDefinitionError(SagaError):
    """A saga class is declared wrongly; raised when the class is defined."""


class UnknownSagaType(SagaError):
    """No saga class is registered with the runtime under this name."""


class MissingCorrelation(SagaError):
    """A message carries no value to find its saga by."""


class InvalidCorrelationId(MissingCorrelation):
    """A message maps to a correlation id no saga can be stored under (a NUL character, too
    long, not Unicode): retrying cannot help, so a worker dead-letters the message at once."""


class UnstorableSagaData(SagaError, ValueError):
    """A saga's data holds text its JSON column cannot store (a NUL character, a lone
    surrogate): retrying cannot help, so a worker dead-letters the message at once."""


class CorrelationChanged(SagaError):
    """An action tried to give a started saga another correlation id.

    The correlation id is the saga's key: messages for the old value would no longer find it.
    Start a new saga for the new value instead (and finish this one).
    """


class InvalidTransition(SagaError):
    """The message is not allowed in the saga's current state."""


class ConcurrencyConflict(SagaError):
    """Another transaction changed or created the same saga first; retry the whole message.

    The consumer worker retries these at once; a caller handling a web request can retry too.
    """


class BatchSpoiled(SagaError):
    """A batch cannot commit its saga changes: a saga failed mid-transition, or a savepoint that
    changed sagas rolled back, so the instances it kept in memory may be wrong. The worker then
    handles the batch's messages again one at a time."""


class SagaAlreadyStarted(SagaError):
    """`start` was asked to create a saga that already exists."""


NotFoundPolicy = Literal["ignore", "raise", "dead_letter"]
#: A saga's own not-found handler: `(session, message) -> None`, run in the transaction.
NotFoundHandler = Callable[[Any, Any], None]


class SagaNotFound(SagaError):
    """A message that can only continue a saga arrived, and no such saga exists.

    `policy` tells a consumer what the saga asked for: "raise" (retry: the starting message may
    still be on its way) or "dead_letter" (park it at once).
    """

    def __init__(self, message: str, policy: NotFoundPolicy | NotFoundHandler = "raise") -> None:
        super().__init__(message)
        self.policy = policy


class TimeoutNotPending(SagaError):
    """An operator action named a timeout the saga is not waiting for (any more)."""


class TimeoutAlreadySent(SagaError):
    """The timeout's message already left the outbox: it is with the worker and fires now."""
