"""Saga rows for a batch of messages handled in one transaction: locked and read together,
kept in memory while the batch runs, written back together just before the commit.

A batching worker starts one with `sagas.store.lock_and_load`. PostgreSQL locks the rows in key
order (`FOR UPDATE` under `ORDER BY`), so two batches sharing sagas wait for each other instead
of deadlocking, and no other transaction can change a locked row while the writes wait for the
commit. Each deferred write still checks the version it expects, which is what guards SQLite
(no row locks there). A saga touched by several messages of a batch is read once, and each
message sees the changes of the one before, since all get the same instance. The messages the
sagas emit are held too and inserted together, in order, with the saga rows and the journal.
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
from sagas.errors import BatchSpoiled

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
    #: Outbox rows the batch's sagas emitted, in order: inserted together after the journal.
    outbox: list[dict[str, Any]] = field(default_factory=list)
    #: Saga writes deferred so far: a savepoint that rolls back after some spoils the batch.
    writes: int = 0
    #: Why the batch must not commit, once something made its instances untrustworthy.
    spoiled: str | None = None

    def spoil(self, reason: str) -> None:
        """Refuse the commit from now on (the first reason is kept)."""
        if self.spoiled is None:
            self.spoiled = reason


def attach(
    session: Session, batch: SagaBatch, write_back: Callable[[Session, SagaBatch], None]
) -> None:
    """Make `batch` this session's current one; `write_back` runs just before its commit.

    A savepoint's release is not the commit; a savepoint rolled back after saga writes spoils
    the batch (its in-memory instances kept changes the database undid), and so does a
    rolled-back transaction end it.
    """
    writes_at: dict[int, int] = {}

    def before_commit(session: Session) -> None:
        if session.in_nested_transaction() or session.info.get(_INFO_KEY) is not batch:
            return
        session.info.pop(_INFO_KEY)
        if batch.spoiled is not None:
            raise BatchSpoiled(f"the batch's saga changes cannot commit: {batch.spoiled}")
        write_back(session, batch)

    def savepoint_started(session: Session, transaction: Any) -> None:
        if transaction.nested and session.info.get(_INFO_KEY) is batch:
            writes_at[id(transaction)] = batch.writes

    def rolled_back(session: Session, previous: Any) -> None:
        if session.info.get(_INFO_KEY) is not batch:
            return
        if previous.nested:
            if batch.writes != writes_at.pop(id(previous), batch.writes):
                batch.spoil("a savepoint that changed sagas rolled back")
        elif previous.parent is None:
            session.info.pop(_INFO_KEY)  # the whole transaction rolled back: nothing is owed

    session.info[_INFO_KEY] = batch
    event.listen(session, "before_commit", before_commit)
    event.listen(session, "after_transaction_create", savepoint_started)
    event.listen(session, "after_soft_rollback", rolled_back)


def current_batch(executor: Executor) -> SagaBatch | None:
    """The batch this session's transaction is running, if any."""
    batch = executor.info.get(_INFO_KEY) if isinstance(executor, Session) else None
    return batch if isinstance(batch, SagaBatch) else None
