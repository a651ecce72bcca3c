"""Reading saga instances for people: lists, one instance in full, and the ones that are stuck.

Answers "where is order 123, how did it get there, what is it waiting for" from the saga row,
its journal, its pending timeouts and the outbox rows not yet shipped for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select

from outbox import clock
from outbox.database import Executor
from outbox.sync_only import refuse_async_call
from outbox.tables import outbox_messages
from sagas.journal import journal_of
from sagas.tables import saga_instances
from sagas.timeouts import PendingTimeout


@dataclass(frozen=True)
class SagaSummary:
    """One saga instance, in a line."""

    saga_type: str
    correlation_id: str
    state: str
    version: int
    updated_at: datetime
    finished_at: datetime | None
    #: The saga definition's `version` whose path the instance follows (`version` counts its
    #: transitions).
    definition_version: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_type": self.saga_type,
            "correlation_id": self.correlation_id,
            "state": self.state,
            "version": self.version,
            "definition_version": self.definition_version,
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class SagaDetail:
    """One saga instance in full."""

    summary: SagaSummary
    data: dict[str, Any]
    timeouts: dict[str, PendingTimeout]
    journal: list[dict[str, Any]]
    unshipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> list[str]:
        """The states the instance went through, in order."""
        states: list[str] = []
        for entry in self.journal:
            for state in (entry["from_state"], entry["to_state"]):
                if state and (not states or states[-1] != state):
                    states.append(state)
        return states

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary.to_json(),
            "data": self.data,
            "timeouts": {name: t.to_json() for name, t in self.timeouts.items()},
            "journal": [
                {
                    key: (value.isoformat() if isinstance(value, datetime) else value)
                    for key, value in entry.items()
                    if key
                    in (
                        "version",
                        "definition_version",
                        "from_state",
                        "to_state",
                        "trigger",
                        "outcome",
                        "at",
                    )
                }
                | {"message_id": str(entry["message_id"])}
                for entry in self.journal
            ],
            "unshipped": [
                {**row, "available_at": row["available_at"].isoformat()} for row in self.unshipped
            ],
        }


def _summary(row: Any) -> SagaSummary:
    return SagaSummary(
        row.saga_type,
        row.correlation_id,
        row.state,
        row.version,
        row.updated_at,
        row.finished_at,
        row.definition_version,
    )


def _summaries(executor: Executor, query: Select[Any]) -> list[SagaSummary]:
    return [_summary(row) for row in executor.execute(query)]


def _base() -> Select[Any]:
    c = saga_instances.c
    return select(
        c.saga_type,
        c.correlation_id,
        c.state,
        c.version,
        c.updated_at,
        c.finished_at,
        c.definition_version,
    )


def list_sagas(
    executor: Executor,
    *,
    saga_type: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[SagaSummary]:
    """Saga instances, most recently changed first, optionally of one type or in one state."""
    refuse_async_call(executor, "list_sagas")
    query = _base().order_by(saga_instances.c.updated_at.desc()).limit(limit)
    if saga_type is not None:
        query = query.where(saga_instances.c.saga_type == saga_type)
    if state is not None:
        query = query.where(saga_instances.c.state == state)
    return _summaries(executor, query)


def stuck_sagas(executor: Executor, *, older_than: datetime, limit: int = 100) -> list[SagaSummary]:
    """Unfinished instances with no transition since `older_than` and no timeout that can still
    move them on: none pending, or the earliest one overdue since before `older_than` (its
    message was lost or dead-lettered: a person would call that saga stuck too)."""
    refuse_async_call(executor, "stuck_sagas")
    cutoff = clock.ensure_aware(older_than, what="older_than")
    c = saga_instances.c
    query = (
        _base()
        .where(
            c.finished_at.is_(None),
            c.updated_at < cutoff,
            or_(c.timeouts.is_(None), c.next_timeout_at < cutoff),
        )
        .order_by(saga_instances.c.updated_at)
        .limit(limit)
    )
    return _summaries(executor, query)


def saga_detail(executor: Executor, saga_type: str, correlation_id: str) -> SagaDetail | None:
    """The instance with its data, journal, pending timeouts and unshipped outbox rows."""
    refuse_async_call(executor, "saga_detail")
    row = executor.execute(
        select(saga_instances).where(
            saga_instances.c.saga_type == saga_type,
            saga_instances.c.correlation_id == correlation_id,
        )
    ).first()
    if row is None:
        return None
    summary = _summary(row)
    o = outbox_messages.c
    unshipped = [
        dict(r._mapping)
        for r in executor.execute(
            select(o.id, o.type, o.destination, o.available_at, o.attempts)
            .where(o.partition_key == correlation_id)
            .order_by(o.available_at, o.id)
        )
    ]
    return SagaDetail(
        summary=summary,
        data=dict(row.data),
        timeouts={name: PendingTimeout.from_json(v) for name, v in (row.timeouts or {}).items()},
        journal=journal_of(executor, row.id),
        unshipped=unshipped,
    )
