"""The inbox check: has this consumer already processed this message? Decided in the caller's
transaction, so the answer commits or rolls back together with the handler's effects."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Insert, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outbox import clock
from outbox.arrays import Array
from outbox.database import Executor, dialect_of, insert_ignoring_conflicts
from outbox.prebuilt import Prebuilt
from outbox.sync_only import refuse_async, refuse_async_call
from outbox.tables import inbox_messages

# One statement per dialect, built once: a worker records every message it handles, and
# building the statement (and its cache key) anew cost about as much as running it (bench/).
_RECORDING_INSERTS: dict[str, Insert] = {}


def _recording_insert(executor: Executor) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING message_id: of two concurrent transactions
    recording the same id, exactly one gets a row back."""
    dialect = dialect_of(executor)
    statement = _RECORDING_INSERTS.get(dialect)
    if statement is None:
        statement = insert_ignoring_conflicts(executor, inbox_messages).returning(
            inbox_messages.c.message_id
        )
        _RECORDING_INSERTS[dialect] = statement
    return statement


def _recording_many() -> Insert:
    """PostgreSQL's batch form of the recording insert: the ids as one array parameter
    (`unnest`), not a VALUES row of three parameters each. A batch of 50 is then one short
    statement that psycopg converts once and prepares, where 150 parameters made it parse the
    SQL anew on every batch (it caches no statement past 50 parameters). The same insert, the
    same conflict rule, so the same answer to two transactions recording one id."""
    rows = select(
        bindparam("consumer", type_=inbox_messages.c.consumer.type),
        func.unnest(bindparam("message_ids", type_=Array(inbox_messages.c.message_id.type))),
        bindparam("processed_at", type_=inbox_messages.c.processed_at.type),
    )
    return (
        pg_insert(inbox_messages)
        .from_select(["consumer", "message_id", "processed_at"], rows)
        .on_conflict_do_nothing()
        .returning(inbox_messages.c.message_id)
    )


_RECORDING_MANY = Prebuilt(_recording_many())  # on the DBAPI cursor: once a batch


class Inbox:
    """Records which messages a consumer has processed, in the caller's transaction."""

    def __init__(self, executor: Executor, consumer: str) -> None:
        refuse_async(executor, "Inbox(...)", "await AsyncInbox(session, consumer).record(id)")
        if not consumer:
            raise ValueError("an inbox needs a consumer name (the endpoint or handler's name)")
        self._executor = executor
        self._consumer = consumer
        self._insert = _recording_insert(executor)

    @property
    def consumer(self) -> str:
        """Whose inbox this is: the endpoint or handler name its rows carry."""
        return self._consumer

    def row(self, message_id: UUID) -> dict[str, Any]:
        """The row `record` inserts for `message_id`, for a statement that records it while it
        does something else (a saga runtime reads the saga row in the same round trip)."""
        return {"consumer": self._consumer, "message_id": message_id, "processed_at": clock.now()}

    def record(self, message_id: UUID) -> bool:
        """Record `message_id`; return True if it is new, False if it was already processed.

        Call it first in the handler's transaction and skip the work when it returns False.
        """
        inserted = self._executor.execute(self._insert, self.row(message_id)).first()
        return inserted is not None

    def record_many(self, message_ids: Iterable[UUID]) -> set[UUID]:
        """Record several ids in one statement; return those that are new (a batch's inbox).

        An id given twice is recorded once. The skipped ids were processed before.
        """
        now = clock.now()
        unique = list(dict.fromkeys(message_ids))
        if not unique:
            return set()
        if len(unique) > 1 and dialect_of(self._executor) == "postgresql":
            parameters = {"consumer": self._consumer, "message_ids": unique, "processed_at": now}
            return {row[0] for row in _RECORDING_MANY.rows(self._executor, parameters)}
        rows = [
            {"consumer": self._consumer, "message_id": message_id, "processed_at": now}
            for message_id in unique
        ]
        return set(self._executor.execute(self._insert, rows).scalars())

    def seen(self, message_id: UUID) -> bool:
        """Tell whether `message_id` was recorded, without recording it."""
        row = self._executor.execute(
            select(inbox_messages.c.message_id).where(
                inbox_messages.c.consumer == self._consumer,
                inbox_messages.c.message_id == message_id,
            )
        ).first()
        return row is not None


def prune_inbox(
    executor: Executor, *, older_than: datetime | timedelta, batch_size: int = 1000
) -> int:
    """Delete up to `batch_size` inbox rows processed before `older_than`; return how many.

    Call it repeatedly, each call in its own short transaction, until it returns 0: small
    batches keep locks short on a busy table. Keep rows longer than any redelivery can take.
    """
    refuse_async_call(executor, "prune_inbox")
    cutoff = clock.cutoff(older_than)
    oldest = (
        select(inbox_messages.c.consumer, inbox_messages.c.message_id)
        .where(inbox_messages.c.processed_at < cutoff)
        .order_by(inbox_messages.c.processed_at)
        .limit(batch_size)
    )
    keys = [(row.consumer, row.message_id) for row in executor.execute(oldest)]
    if keys:
        key = tuple_(inbox_messages.c.consumer, inbox_messages.c.message_id)
        executor.execute(delete(inbox_messages).where(key.in_(keys)))
    return len(keys)
