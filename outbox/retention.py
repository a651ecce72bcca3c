"""Retention: deleting rows past their keeping time, in small batches several processes can run.

Each call deletes at most one batch in the caller's transaction; run it in a loop of short
transactions until it returns less than the batch size. On PostgreSQL the batch's rows are
chosen with `FOR UPDATE SKIP LOCKED`, so two pruners running at once take different rows
instead of waiting on (or deadlocking over) the same ones; SQLite lets one writer in at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select, tuple_

from outbox import clock
from outbox.database import Executor, dialect_of
from outbox.sync_only import refuse_async_call
from outbox.tables import dead_letters


def oldest_keys(
    executor: Executor,
    table: Table,
    *,
    key: Sequence[str],
    where: ColumnElement[bool],
    oldest_first: str,
    batch_size: int,
) -> list[tuple[Any, ...]]:
    """Lock and return the keys of up to `batch_size` rows matching `where`, oldest first,
    skipping rows another pruner holds."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    query = (
        select(*(table.c[name] for name in key))
        .where(where)
        .order_by(table.c[oldest_first])
        .limit(batch_size)
    )
    if dialect_of(executor) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [tuple(row) for row in executor.execute(query)]


def delete_keys(
    executor: Executor, table: Table, key: Sequence[str], keys: Sequence[tuple[Any, ...]]
) -> int:
    """Delete the rows with these keys; return how many went."""
    if not keys:
        return 0
    if len(key) == 1:
        condition = table.c[key[0]].in_([k[0] for k in keys])
    else:
        condition = tuple_(*(table.c[name] for name in key)).in_(list(keys))
    return int(executor.execute(delete(table).where(condition)).rowcount)  # type: ignore[attr-defined]


def prune_dead_letters(
    executor: Executor, *, older_than: datetime | timedelta, batch_size: int = 500
) -> int:
    """Delete up to `batch_size` dead letters that last failed before `older_than`.

    Policy: a dead letter waits for a person (replay or discard); past the retention nobody
    will, and its bytes only cost space. Keep it longer than your team's on-call rotation.
    """
    refuse_async_call(executor, "prune_dead_letters")
    cutoff = clock.cutoff(older_than)
    key = ("id",)
    keys = oldest_keys(
        executor,
        dead_letters,
        key=key,
        where=dead_letters.c.last_failed_at < cutoff,
        oldest_first="last_failed_at",
        batch_size=batch_size,
    )
    return delete_keys(executor, dead_letters, key, keys)
