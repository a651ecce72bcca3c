"""Sagas as explicit state machines, persisted next to the service's business rows.

Builds on `outbox`: a saga's emitted messages go to the outbox in the caller's transaction.
"""

from __future__ import annotations

from outbox.faults import Faulted
from sagas.compensation import Step, step
from sagas.context import SagaContext
from sagas.definition import Saga, on
from sagas.diagram import Finding
from sagas.errors import (
    BatchSpoiled,
    ConcurrencyConflict,
    CorrelationChanged,
    InvalidCorrelationId,
    InvalidTransition,
    MissingCorrelation,
    SagaAlreadyStarted,
    SagaDefinitionError,
    SagaError,
    SagaNotFound,
    UnknownSagaType,
    UnstorableSagaData,
)
from sagas.evolution import EVERYWHERE, OLD_PATH
from sagas.joins import Branch, JoinTimedOut, branch, join
from sagas.outcomes import Handled
from sagas.requests import Misaddressed, RequestTimedOut
from sagas.retention import prune_finished, prune_journal
from sagas.runtime import SagaRuntime
from sagas.timeouts import PendingTimeout, Timeout

__all__ = [
    "EVERYWHERE",
    "OLD_PATH",
    "BatchSpoiled",
    "Branch",
    "ConcurrencyConflict",
    "CorrelationChanged",
    "Faulted",
    "Finding",
    "Handled",
    "InvalidCorrelationId",
    "InvalidTransition",
    "JoinTimedOut",
    "Misaddressed",
    "MissingCorrelation",
    "PendingTimeout",
    "RequestTimedOut",
    "Saga",
    "SagaAlreadyStarted",
    "SagaContext",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFound",
    "SagaRuntime",
    "Step",
    "Timeout",
    "UnknownSagaType",
    "UnstorableSagaData",
    "branch",
    "join",
    "on",
    "prune_finished",
    "prune_journal",
    "step",
]
