"""Retention of the saga tables: finished sagas (tombstones) and journal lines of unknown sagas.

Policies, one per table:

- `saga_instances`: a finished saga stays as a tombstone so a late message is told from an
  unknown saga; `prune_finished` deletes the ones finished before the retention, with every
  journal line of their id. Unfinished sagas are never deleted.
- `saga_journal`: a saga's lines live as long as the saga; the lines of messages for which no
  saga existed (`not_found`, `stale`, after pruning also `late`) belong to none and
  `prune_journal` deletes them once older than the retention.

Both delete one batch per call, safe to run from several processes at once (see
`outbox.retention`); call them in short transactions until they return less than a batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete

from outbox import clock
from outbox.database import Executor
from outbox.retention import delete_keys, oldest_keys
from outbox.sync_only import refuse_async_call
from sagas.tables import saga_instances, saga_journal


def prune_finished(
    executor: Executor, *, older_than: datetime | timedelta, batch_size: int = 500
) -> int:
    """Delete up to `batch_size` sagas that finished before `older_than`, with their journal.

    `older_than` is an aware datetime or an age (`timedelta(days=30)`: finished before now
    minus that). Tombstones tell a late message from an unknown saga, so keep them longer than
    any message can be late. Call it repeatedly, each call in its own transaction, until it
    returns 0.
    """
    refuse_async_call(executor, "prune_finished")
    cutoff = clock.cutoff(older_than)
    keys = oldest_keys(
        executor,
        saga_instances,
        key=("id",),
        where=saga_instances.c.finished_at < cutoff,
        oldest_first="finished_at",
        batch_size=batch_size,
    )
    if keys:
        ids = [key[0] for key in keys]
        executor.execute(delete(saga_journal).where(saga_journal.c.saga_id.in_(ids)))
    return delete_keys(executor, saga_instances, ("id",), keys)


def prune_journal(
    executor: Executor, *, older_than: datetime | timedelta, batch_size: int = 1000
) -> int:
    """Delete up to `batch_size` journal lines older than `older_than` that belong to no saga
    instance (messages for sagas that did not exist); return how many went. `older_than` is
    an aware datetime or an age (a timedelta back from now)."""
    refuse_async_call(executor, "prune_journal")
    cutoff = clock.cutoff(older_than)
    keys = oldest_keys(
        executor,
        saga_journal,
        key=("id",),
        where=and_(saga_journal.c.incarnation.is_(None), saga_journal.c.at < cutoff),
        oldest_first="at",
        batch_size=batch_size,
    )
    return delete_keys(executor, saga_journal, ("id",), keys)
