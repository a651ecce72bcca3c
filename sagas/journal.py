"""A saga's journal in SQL: the line saying what a message did to a saga, writing it (in a
batch, at the batch's commit), and reading a saga's journal back."""

from __future__ import annotations

from typing import Any, TypedDict, Unpack
from uuid import UUID

from sqlalchemy import insert, select

from outbox import clock
from outbox.database import Executor
from outbox.messages import Message
from outbox.sync_only import refuse_async_call
from sagas.batch import current_batch
from sagas.definition import Saga
from sagas.tables import saga_journal

# Built once: the worker journals every message.
JOURNAL_INSERT = insert(saga_journal)


class LineFields(TypedDict, total=False):
    """What a journal line may say beyond its message and outcome."""

    from_state: str | None
    to_state: str | None
    version: int | None
    #: None when no saga instance exists for the message: retention removes those lines
    #: (`sagas.retention.prune_journal`); the others go with their saga.
    incarnation: UUID | None
    definition_version: int | None
    #: The saga's id when the caller has it (a loaded saga), saving the hash that derives it.
    saga_id: UUID | None


def journal_line(
    saga_type: type[Saga[Any]],
    correlation_id: str,
    message: Message,
    outcome: str,
    **fields: Unpack[LineFields],
) -> dict[str, Any]:
    """The journal row saying what a message did to (or could not do to) a saga."""
    return {
        "saga_id": fields.get("saga_id") or saga_type.id_for(correlation_id),
        "saga_type": saga_type.saga_type,
        "correlation_id": correlation_id,
        "incarnation": fields.get("incarnation"),
        "version": fields.get("version"),
        "definition_version": fields.get("definition_version"),
        "from_state": fields.get("from_state"),
        "to_state": fields.get("to_state"),
        "trigger": message.type_name,
        "message_id": message.message_id,
        "outcome": outcome,
        "at": clock.now(),
    }


def journal(
    executor: Executor,
    saga_type: type[Saga[Any]],
    correlation_id: str,
    message: Message,
    outcome: str,
    **fields: Unpack[LineFields],
) -> None:
    """Record what a message did to (or could not do to) a saga (in a batch: at its commit)."""
    write_journal_line(
        executor, journal_line(saga_type, correlation_id, message, outcome, **fields)
    )


def write_journal_line(executor: Executor, line: dict[str, Any]) -> None:
    """Insert a `journal_line` (in a batch: at its commit)."""
    batch = current_batch(executor)
    if batch is not None:
        batch.journal.append(line)
        batch.writes += 1
    else:
        executor.execute(JOURNAL_INSERT, line)


def journal_of(executor: Executor, saga_id: UUID) -> list[dict[str, Any]]:
    """A saga's journal, oldest first."""
    refuse_async_call(executor, "journal_of")
    rows = executor.execute(
        select(saga_journal).where(saga_journal.c.saga_id == saga_id).order_by(saga_journal.c.id)
    )
    return [dict(row) for row in rows.mappings()]
