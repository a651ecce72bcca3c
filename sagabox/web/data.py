"""What the dashboard's pages show, read from the database: overview numbers and saga search.

Search pages with a keyset on (saga type, correlation id), the unique index every saga table
has, so the thousandth page costs what the first does; the cursor is the last row shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, tuple_

from outbox import clock
from outbox.database import Executor
from outbox.dead_letter_groups import DeadLetterGroup, dead_letter_groups
from outbox.tables import UTCDateTime, outbox_messages
from sagas.queries import SagaSummary, stuck_sagas
from sagas.tables import saga_instances
from sagas.timeout_admin import TimeoutEntry, list_timeouts


@dataclass(frozen=True)
class Overview:
    """The numbers on the front page."""

    now: datetime
    backlog: int
    oldest_due_age: timedelta | None
    scheduled: int
    dead_letters: list[DeadLetterGroup]
    stuck: list[SagaSummary]
    counts: dict[str, dict[str, int]]
    states: list[str]
    timeouts_soon: list[TimeoutEntry]


def overview(executor: Executor, *, stuck_after: timedelta) -> Overview:
    """Outbox backlog, dead letters, stuck sagas, type x state counts, timeouts due within 1h."""
    now = clock.now()
    o = outbox_messages.c
    due = executor.execute(
        select(func.count(), func.min(o.available_at, type_=UTCDateTime())).where(
            o.available_at <= now
        )
    ).one()
    scheduled = executor.execute(select(func.count()).where(o.available_at > now)).scalar_one()
    c = saga_instances.c
    counts: dict[str, dict[str, int]] = {}
    states: set[str] = set()
    for row in executor.execute(
        select(c.saga_type, c.state, func.count()).group_by(c.saga_type, c.state)
    ):
        counts.setdefault(row[0], {})[row[1]] = row[2]
        states.add(row[1])
    return Overview(
        now=now,
        backlog=due[0],
        oldest_due_age=now - due[1] if due[1] is not None else None,
        scheduled=scheduled,
        dead_letters=dead_letter_groups(executor, limit=20),
        stuck=stuck_sagas(executor, older_than=now - stuck_after, limit=20),
        counts=dict(sorted(counts.items())),
        states=sorted(states),
        timeouts_soon=list_timeouts(executor, due_before=now + timedelta(hours=1), limit=20),
    )


@dataclass(frozen=True)
class Search:
    """A saga search: every field optional; `after` is the keyset cursor (type, id)."""

    saga_type: str = ""
    state: str = ""
    prefix: str = ""
    #: Only instances created at least this long ago.
    older_than: timedelta | None = None
    stuck_after: timedelta | None = None
    after: tuple[str, str] | None = None
    limit: int = 50


@dataclass(frozen=True)
class Page:
    """One page of search results and the cursor of the next (None: this is the last)."""

    rows: list[SagaSummary]
    next_after: tuple[str, str] | None
    extra: dict[str, Any] = field(default_factory=dict)


def search(executor: Executor, query: Search) -> Page:
    """The instances matching `query`, in (type, correlation id) order, one page."""
    c = saga_instances.c
    now = clock.now()
    statement = (
        select(c.saga_type, c.correlation_id, c.state, c.version, c.updated_at, c.finished_at)
        .order_by(c.saga_type, c.correlation_id)
        .limit(query.limit + 1)
    )
    if query.saga_type:
        statement = statement.where(c.saga_type == query.saga_type)
    if query.state:
        statement = statement.where(c.state == query.state)
    if query.prefix:
        statement = statement.where(c.correlation_id.startswith(query.prefix, autoescape=True))
    if query.older_than is not None:
        statement = statement.where(c.created_at <= now - query.older_than)
    if query.stuck_after is not None:
        cutoff = now - query.stuck_after
        statement = statement.where(
            c.finished_at.is_(None),
            c.updated_at < cutoff,
            or_(c.timeouts.is_(None), c.next_timeout_at < cutoff),
        )
    if query.after is not None:
        statement = statement.where(tuple_(c.saga_type, c.correlation_id) > tuple_(*query.after))
    rows = [
        SagaSummary(r.saga_type, r.correlation_id, r.state, r.version, r.updated_at, r.finished_at)
        for r in executor.execute(statement)
    ]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    last = rows[-1] if more and rows else None
    return Page(rows, (last.saga_type, last.correlation_id) if last else None)
