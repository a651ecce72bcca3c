"""Saga rows in SQL: load, create (race-safe), update (version-checked), and journal."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import bindparam, delete, insert, null, select, update

from outbox import clock
from outbox.database import Executor, insert_ignoring_conflicts
from outbox.messages import Message
from sagas.definition import Saga
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import PendingTimeout

S = TypeVar("S", bound=Saga[Any])


# Built once: the worker runs these for every message, and building a statement (and its cache
# key) each time cost more than the round trip to the database (profiled in bench/).
_LOAD = select(saga_instances).where(
    saga_instances.c.saga_type == bindparam("b_saga_type"),
    saga_instances.c.correlation_id == bindparam("b_correlation_id"),
)
_SAVE = (
    update(saga_instances)
    .where(
        saga_instances.c.id == bindparam("b_id"),
        saga_instances.c.version == bindparam("b_expected_version"),
    )
    .returning(saga_instances.c.id)
)
_JOURNAL = insert(saga_journal)


def load(executor: Executor, saga_type: type[S], correlation_id: str) -> S | None:
    """The saga instance of `saga_type` for `correlation_id`, finished or not, or None."""
    row = (
        executor.execute(
            _LOAD, {"b_saga_type": saga_type.saga_type, "b_correlation_id": correlation_id}
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return saga_type(
        saga_id=row["id"],
        correlation_id=row["correlation_id"],
        state=row["state"],
        data=saga_type.data_type.model_validate(row["data"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        timeouts={
            name: PendingTimeout.from_json(value) for name, value in (row["timeouts"] or {}).items()
        },
    )


def create(executor: Executor, saga: Saga[Any]) -> bool:
    """Insert a new saga row; False if another transaction created the same saga first."""
    statement = (
        insert_ignoring_conflicts(executor, saga_instances)
        .values({**_columns(saga), "id": saga.id, "created_at": saga.created_at})
        .returning(saga_instances.c.id)
    )
    return executor.execute(statement).first() is not None


def save(executor: Executor, saga: Saga[Any], *, expected_version: int) -> bool:
    """Write a loaded saga back; False if its row changed since it was loaded (stale version)."""
    parameters = {**_columns(saga), "b_id": saga.id, "b_expected_version": expected_version}
    return executor.execute(_SAVE, parameters).first() is not None


def journal(
    executor: Executor,
    saga_type: type[Saga[Any]],
    correlation_id: str,
    message: Message,
    outcome: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    version: int | None = None,
) -> None:
    """Record what a message did to (or could not do to) a saga."""
    executor.execute(
        _JOURNAL,
        {
            "saga_id": saga_type.id_for(correlation_id),
            "saga_type": saga_type.saga_type,
            "correlation_id": correlation_id,
            "version": version,
            "from_state": from_state,
            "to_state": to_state,
            "trigger": message.type_name,
            "message_id": message.message_id,
            "outcome": outcome,
            "at": clock.now(),
        },
    )


def journal_of(executor: Executor, saga_id: UUID) -> list[dict[str, Any]]:
    """A saga's journal, oldest first."""
    rows = executor.execute(
        select(saga_journal).where(saga_journal.c.saga_id == saga_id).order_by(saga_journal.c.id)
    )
    return [dict(row) for row in rows.mappings()]


def _columns(saga: Saga[Any]) -> dict[str, Any]:
    return {
        "saga_type": saga.saga_type,
        "correlation_id": saga.correlation_id,
        "state": saga.state_name,
        "data": saga.data.model_dump(mode="json"),
        "version": saga.version,
        "updated_at": saga.updated_at,
        "finished_at": saga.finished_at,
        # SQL NULL, not JSON null, when nothing is pending: "stuck" queries test for it.
        "timeouts": {name: pending.to_json() for name, pending in saga.timeouts.items()} or null(),
    }


def prune_finished(executor: Executor, *, older_than: datetime, batch_size: int = 500) -> int:
    """Delete up to `batch_size` sagas that finished before `older_than`, with their journal.

    Tombstones tell a late message from an unknown saga, so keep them longer than any message
    can be late. Call it repeatedly, each call in its own transaction, until it returns 0.
    """
    cutoff = clock.ensure_aware(older_than, what="older_than")
    ids = list(
        executor.scalars(
            select(saga_instances.c.id)
            .where(saga_instances.c.finished_at < cutoff)
            .order_by(saga_instances.c.finished_at)
            .limit(batch_size)
        )
    )
    if ids:
        executor.execute(delete(saga_journal).where(saga_journal.c.saga_id.in_(ids)))
        executor.execute(delete(saga_instances).where(saga_instances.c.id.in_(ids)))
    return len(ids)
