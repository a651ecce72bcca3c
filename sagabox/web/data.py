"""What the dashboard's pages show, read from the database: overview numbers and saga search.

Search pages with a keyset on (saga type, correlation id), the unique index every saga table
has, on (correlation id, type) for an id prefix, or on (created at, type, id) for an age, oldest
first, so the thousandth page costs what the first does; the cursor is the last row shown.
Nothing counts a big table whole on every page: the counts shown stop at a cap, and the type x
state table comes from `counts.CountsCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    collate,
    false,
    func,
    or_,
    select,
    tuple_,
    union_all,
)

from outbox import clock
from outbox.database import Executor, dialect_of
from outbox.dead_letter_groups import DeadLetterGroup, dead_letter_groups
from outbox.tables import UTCDateTime, dead_letters, outbox_messages
from sagabox.web.counts import GroupCounts, TypeStateCounts, count_by_type_and_state, count_groups
from sagas.queries import SagaSummary, stuck_sagas
from sagas.tables import saga_instances
from sagas.timeout_admin import TimeoutEntry, list_timeouts

#: Counts past this are shown as "10000+": counting on would scan a big table on every page.
COUNT_CAP = 10_000
#: Stuck sagas and soon-due timeouts the front page lists.
LISTED = 20


@dataclass(frozen=True)
class Bounded:
    """A count that stopped at a cap: `more` says there are more than `value`."""

    value: int
    more: bool

    def __str__(self) -> str:
        return f"{self.value}+" if self.more else str(self.value)


def bounded_count(executor: Executor, query: Select[Any], cap: int = COUNT_CAP) -> Bounded:
    """How many rows `query` yields, counting no further than `cap` (order `query` by an
    indexed column, so the planner walks that index rather than the table)."""
    found = executor.execute(select(func.count()).select_from(query.limit(cap + 1).subquery()))
    value = found.scalar_one()
    return Bounded(min(value, cap), value > cap)


@dataclass(frozen=True)
class Overview:
    """The numbers on the front page."""

    now: datetime
    backlog: Bounded
    oldest_due_age: timedelta | None
    scheduled: Bounded
    dead_letters: list[DeadLetterGroup]
    #: Letters in every group, and when they were counted (the groups can be cached).
    dead_letters_total: int
    dead_letters_counted_at: datetime
    stuck: list[SagaSummary]
    stuck_more: bool
    counts: TypeStateCounts
    timeouts_soon: list[TimeoutEntry]
    timeouts_more: bool


def overview(
    executor: Executor,
    *,
    stuck_after: timedelta,
    counts: TypeStateCounts | None = None,
    groups: GroupCounts | None = None,
) -> Overview:
    """Outbox backlog, dead letters, stuck sagas, type x state counts, timeouts due within 1h.

    Every part reads a bounded number of index entries but the type x state counts and the
    dead-letter groups: pass the cached ones (`CountsCache`, `GroupsCache`) to keep them off
    the page's time; by default they are counted.
    """
    now = clock.now()
    o = outbox_messages.c
    oldest = executor.execute(
        select(func.min(o.available_at, type_=UTCDateTime())).where(o.available_at <= now)
    ).scalar_one()
    stuck = stuck_sagas(executor, older_than=now - stuck_after, limit=LISTED + 1)
    soon = list_timeouts(executor, due_before=now + timedelta(hours=1), limit=LISTED + 1)
    if groups is None:
        groups = count_groups(executor, limit=LISTED)
    return Overview(
        now=now,
        backlog=bounded_count(
            executor, select(o.id).where(o.available_at <= now).order_by(o.available_at)
        ),
        oldest_due_age=now - oldest if oldest is not None else None,
        scheduled=bounded_count(
            executor, select(o.id).where(o.available_at > now).order_by(o.available_at)
        ),
        dead_letters=groups.groups[:LISTED],
        dead_letters_total=groups.total,
        dead_letters_counted_at=groups.counted_at,
        stuck=stuck[:LISTED],
        stuck_more=len(stuck) > LISTED,
        counts=counts if counts is not None else count_by_type_and_state(executor),
        timeouts_soon=soon[:LISTED],
        timeouts_more=len(soon) > LISTED,
    )


@dataclass(frozen=True)
class LetterLine:
    """One dead letter as its group's table lists it."""

    id: int
    message_id: Any
    attempts: int
    last_failed_at: datetime


def letters_by_group(
    executor: Executor, *, per_group: int = 10, groups: Sequence[DeadLetterGroup] | None = None
) -> dict[tuple[str, str | None, str], list[LetterLine]]:
    """The oldest `per_group` letters of each group in `groups` (by default every group), in
    one statement that reads only the columns listed (a letter's body and traceback can be
    large): one range of the (endpoint, type, id) index per group, however big the group."""
    if groups is None:
        groups = dead_letter_groups(executor)
    if not groups:
        return {}
    d = dead_letters.c
    columns = (d.id, d.endpoint, d.type, d.reason, d.message_id, d.attempts, d.last_failed_at)
    parts = [
        select(*columns)
        .where(
            d.endpoint == group.endpoint,
            d.type.is_(None) if group.type is None else d.type == group.type,
            d.reason == group.reason,
        )
        .order_by(d.id)
        .limit(per_group)
        .subquery()
        for group in groups
    ]
    # Each group's LIMIT in a subquery of its own: SQLite allows none on a UNION's branch.
    found: dict[tuple[str, str | None, str], list[LetterLine]] = {}
    for row in executor.execute(union_all(*(select(part) for part in parts))):
        line = LetterLine(row.id, row.message_id, row.attempts, row.last_failed_at)
        found.setdefault((row.endpoint, row.type, row.reason), []).append(line)
    for lines in found.values():
        lines.sort(key=lambda line: line.id)
    return found


@dataclass(frozen=True)
class Search:
    """A saga search: every field optional; `after` is the keyset cursor (type, id), and
    `after_created` that row's creation time, which an age search pages by (looked up by the
    cursor's key when not given)."""

    saga_type: str = ""
    state: str = ""
    prefix: str = ""
    #: Only instances created at least this long ago.
    older_than: timedelta | None = None
    stuck_after: timedelta | None = None
    after: tuple[str, str] | None = None
    after_created: datetime | None = None
    limit: int = 50


@dataclass(frozen=True)
class Page:
    """One page of search results and the cursor of the next (None: this is the last), with
    the cursor row's creation time for an age search."""

    rows: list[SagaSummary]
    next_after: tuple[str, str] | None
    next_created: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def search(executor: Executor, query: Search) -> Page:
    """The instances matching `query`, one page: in (type, correlation id) order, in
    (correlation id, type) order when searching by an id prefix, or oldest first (created at,
    type, id) when by age, each order an index's."""
    c = saga_instances.c
    now = clock.now()
    statement = select(
        c.saga_type, c.correlation_id, c.state, c.version, c.updated_at, c.finished_at, c.created_at
    ).limit(query.limit + 1)
    if query.prefix:
        # The prefix as a range in code point order (the "C" collation's on PostgreSQL):
        # the id prefix index serves it in id order, however many ids it spans.
        ident = (
            collate(c.correlation_id, "C")
            if dialect_of(executor) == "postgresql"
            else c.correlation_id
        )
        statement = statement.where(
            ident >= query.prefix,
            c.correlation_id.startswith(query.prefix, autoescape=True),
        ).order_by(ident, c.saga_type)
        if (end := _after_prefix(query.prefix)) is not None:
            statement = statement.where(ident < end)
        if query.after is not None:
            statement = statement.where(
                tuple_(ident, c.saga_type) > tuple_(query.after[1], query.after[0])
            )
    elif query.older_than is not None:
        # "Created before the cutoff" is the start of the creation time index up to the cutoff:
        # oldest first, every page a range from its cursor (in type order, a filter on the
        # unique index, the first page read past every younger saga).
        statement = statement.order_by(c.created_at, c.saga_type, c.correlation_id)
        if query.after is not None:
            statement = statement.where(
                tuple_(c.created_at, c.saga_type, c.correlation_id)
                > tuple_(_created_of(query.after, query.after_created), *query.after)
            )
    else:
        statement = statement.order_by(c.saga_type, c.correlation_id)
        if query.after is not None and query.saga_type:
            # Within one type the cursor is the id alone: PostgreSQL starts an index scan at
            # `saga_type = ...` and would walk the type's rows up to a row-valued cursor.
            after_type, after_id = query.after
            if after_type == query.saga_type:
                statement = statement.where(c.correlation_id > after_id)
            elif after_type > query.saga_type:
                statement = statement.where(false())
        elif query.after is not None:
            statement = statement.where(
                tuple_(c.saga_type, c.correlation_id) > tuple_(*query.after)
            )
    if query.saga_type:
        statement = statement.where(c.saga_type == query.saga_type)
    if query.state:
        statement = statement.where(c.state == query.state)
    if query.older_than is not None:
        statement = statement.where(c.created_at <= now - query.older_than)
    if query.stuck_after is not None:
        cutoff = now - query.stuck_after
        statement = statement.where(
            c.finished_at.is_(None),
            c.updated_at < cutoff,
            or_(c.timeouts.is_(None), c.next_timeout_at < cutoff),
        )
    found = list(executor.execute(statement))
    rows = [
        SagaSummary(r.saga_type, r.correlation_id, r.state, r.version, r.updated_at, r.finished_at)
        for r in found[: query.limit]
    ]
    if len(found) <= query.limit or not rows:
        return Page(rows, None)
    last = found[query.limit - 1]
    created = last.created_at if query.older_than is not None and not query.prefix else None
    return Page(rows, (last.saga_type, last.correlation_id), created)


def _created_of(after: tuple[str, str], created: datetime | None) -> ColumnElement[Any]:
    """The age cursor's creation time: given (a pruned cursor row pages on), or else the
    cursor row's, one probe of the unique key."""
    if created is not None:
        return bindparam("after_created", created, type_=UTCDateTime())
    c = saga_instances.c
    return (
        select(c.created_at)
        .where(c.saga_type == after[0], c.correlation_id == after[1])
        .scalar_subquery()
    )


def _after_prefix(prefix: str) -> str | None:
    """The first string past every one starting with `prefix`, in code point order (None: no
    such string, the prefix is all U+10FFFF)."""
    kept = prefix.rstrip(chr(0x10FFFF))
    if not kept:
        return None
    following = ord(kept[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters: skip to the next one
        following = 0xE000
    return kept[:-1] + chr(following)
