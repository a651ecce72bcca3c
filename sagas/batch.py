"""Saga rows for a batch of messages handled in one transaction: locked and read together,
kept in memory while the batch runs, written back together just before the commit.

A batching worker starts one with `sagas.store.lock_and_load`. PostgreSQL locks the rows in key
order (`FOR UPDATE` under `ORDER BY`), so two batches sharing sagas wait for each other instead
of deadlocking, and no other transaction can change a locked row while the writes wait for the
commit. Each deferred write still checks the version it expects, which is what guards SQLite
(no row locks there). A saga touched by several messages of a batch is read once, and each
message sees the changes of the one before, since all get the same instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import event
from sqlalchemy.orm import Session

from outbox.database import Executor
from sagas.definition import Saga

_INFO_KEY = "sagabox.saga_batch"

Key = tuple[str, str]


@dataclass
class SagaBatch:
    """The saga rows one transaction holds, and the writes it owes the database."""

    #: Rows read for the batch and not yet turned into instances, by (saga type, correlation id).
    rows: dict[Key, Any] = field(default_factory=dict)
    #: Instances by (saga type, correlation id): every message of the batch gets the same one.
    instances: dict[Key, Saga[Any]] = field(default_factory=dict)
    #: The version each changed saga has in the database, which its deferred update expects.
    expected: dict[UUID, int] = field(default_factory=dict)
    changed: dict[UUID, Saga[Any]] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)


def attach(
    session: Session, batch: SagaBatch, write_back: Callable[[Session, SagaBatch], None]
) -> None:
    """Make `batch` this session's current one; `write_back` runs just before its commit."""

    def before_commit(session: Session) -> None:
        if session.info.pop(_INFO_KEY, None) is batch:
            write_back(session, batch)

    def after_end(session: Session, transaction: Any) -> None:
        if transaction.parent is None and session.info.get(_INFO_KEY) is batch:
            session.info.pop(_INFO_KEY)  # rolled back: nothing is owed any more

    session.info[_INFO_KEY] = batch
    event.listen(session, "before_commit", before_commit, once=True)
    event.listen(session, "after_transaction_end", after_end)


def current_batch(executor: Executor) -> SagaBatch | None:
    """The batch this session's transaction is running, if any."""
    batch = executor.info.get(_INFO_KEY) if isinstance(executor, Session) else None
    return batch if isinstance(batch, SagaBatch) else None
