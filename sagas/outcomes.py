"""What a message did to each saga (`Handled`), and the journal line of one that changed none.

The runtime, addressed replies and the worker's metrics all read these; they are kept apart from
`SagaRuntime` so that none of them needs the runtime to say what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from outbox.database import Executor
from outbox.messages import Message
from sagas import journal
from sagas.definition import Saga
from sagas.errors import ConcurrencyConflict

#: What a message did to one saga; also the journal's `outcome` column.
Outcome = Literal["transition", "unchanged", "ignored", "late", "not_found", "stale"]


@dataclass(frozen=True)
class Handled:
    """The result of one message for one saga type."""

    saga_type: str
    saga_id: UUID
    correlation_id: str
    outcome: Outcome
    from_state: str | None = None
    to_state: str | None = None
    version: int | None = None


def conflict(saga: Saga[Any], before: str, message: Message, *, created: bool) -> Exception:
    """The error of a saga written by another transaction meanwhile: the message is retried."""
    return ConcurrencyConflict(
        f"{saga.saga_type} {saga.correlation_id!r} (id {saga.id}, state {before!r}) was "
        f"{'created' if created else 'changed'} by another transaction while handling "
        f"{message.type_name}; retry the message"
    )


def unchanged(
    executor: Executor,
    cls: type[Saga[Any]],
    correlation_id: str,
    message: Message,
    outcome: Outcome,
    saga: Saga[Any] | None,
    state: str | None,
) -> Handled:
    """Journal a message that changed no saga (not found, late, stale, ignored) and say so;
    `saga` is the instance it was for, if there is one."""
    journal.journal(
        executor,
        cls,
        correlation_id,
        message,
        outcome,
        from_state=state,
        to_state=state,
        incarnation=None if saga is None else saga.incarnation,
        definition_version=None if saga is None else saga.definition_version,
    )
    return Handled(cls.saga_type, cls.id_for(correlation_id), correlation_id, outcome, state, state)


def handled(saga: Saga[Any], outcome: Outcome, before: str) -> Handled:
    """What `message` did to `saga`, which was in state `before`."""
    return Handled(
        saga.saga_type,
        saga.id,
        saga.correlation_id,
        outcome,
        before,
        saga.state_name,
        saga.version,
    )
