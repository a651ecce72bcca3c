"""Sagas as explicit state machines, persisted next to the service's business rows.

Builds on `outbox`: a saga's emitted messages go to the outbox in the caller's transaction.
"""

from __future__ import annotations

from sagas.context import SagaContext
from sagas.definition import Saga, on
from sagas.diagram import Finding
from sagas.errors import (
    BatchSpoiled,
    ConcurrencyConflict,
    InvalidTransition,
    MissingCorrelation,
    SagaAlreadyStarted,
    SagaDefinitionError,
    SagaError,
    SagaNotFound,
    UnknownSagaType,
)
from sagas.runtime import Handled, SagaRuntime
from sagas.store import prune_finished
from sagas.timeouts import PendingTimeout, Timeout

__all__ = [
    "BatchSpoiled",
    "ConcurrencyConflict",
    "Finding",
    "Handled",
    "InvalidTransition",
    "MissingCorrelation",
    "PendingTimeout",
    "Saga",
    "SagaAlreadyStarted",
    "SagaContext",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFound",
    "SagaRuntime",
    "Timeout",
    "UnknownSagaType",
    "on",
    "prune_finished",
]
