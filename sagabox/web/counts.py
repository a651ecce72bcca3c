"""The dashboard's whole-table counts (saga type x state, dead-letter groups), cached, with age.

Counting a million saga rows by type and state is an index-only scan of the whole (state, type,
correlation id) index: a few hundred milliseconds, far too much for a page that refreshes every
few seconds; grouping 100,000 dead letters reads every letter. So a count is cached: a page
finding it older than `max_age` starts one recount in a background thread and shows the previous
count meanwhile, with the time it was taken, so no page waits for it but the very first. The
dead-letter groups are counted on every page while there are few letters (exact, and cheap),
and again right after an action on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Engine, func, select

from outbox import clock
from outbox.database import Executor
from outbox.dead_letter_groups import DeadLetterGroup, dead_letter_groups
from outbox.tables import dead_letters
from sagas.tables import saga_instances

log = logging.getLogger("sagabox.web")


@dataclass(frozen=True)
class TypeStateCounts:
    """Saga instances by type and state, as counted at `counted_at`."""

    by_type: dict[str, dict[str, int]]
    states: list[str]
    counted_at: datetime


def count_by_type_and_state(executor: Executor) -> TypeStateCounts:
    """Count every saga instance by (type, state): exact, and a scan of an index."""
    c = saga_instances.c
    counted_at = clock.now()
    by_type: dict[str, dict[str, int]] = {}
    states: set[str] = set()
    for row in executor.execute(
        select(c.saga_type, c.state, func.count()).group_by(c.saga_type, c.state)
    ):
        by_type.setdefault(row[0], {})[row[1]] = row[2]
        states.add(row[1])
    return TypeStateCounts(dict(sorted(by_type.items())), sorted(states), counted_at)


#: Dead letters up to which the groups are counted on every page: a millisecond or two.
EXACT_LETTERS = 1_000
#: Groups a count keeps (the largest): past them the page says there are more.
MAX_GROUPS = 500


@dataclass(frozen=True)
class GroupCounts:
    """The dead-letter groups, the largest first, as counted at `counted_at`; `more`: there are
    more groups than `groups` holds; `total`: letters in all groups."""

    groups: list[DeadLetterGroup]
    more: bool
    total: int
    counted_at: datetime


def count_groups(executor: Executor, *, limit: int = MAX_GROUPS) -> GroupCounts:
    """Count every dead letter by (endpoint, type, reason), keeping the `limit` largest groups."""
    counted_at = clock.now()
    groups = dead_letter_groups(executor, limit=limit + 1)
    more = len(groups) > limit
    total = (
        executor.execute(select(func.count()).select_from(dead_letters)).scalar_one()
        if more
        else sum(group.count for group in groups)
    )
    return GroupCounts(groups[:limit], more, total, counted_at)


class Counted(Protocol):
    """A count that knows when it was taken."""

    @property
    def counted_at(self) -> datetime: ...


C = TypeVar("C", bound=Counted)


class Recounted(Generic[C]):
    """The last count and at most one recount under way (stale while revalidating)."""

    def __init__(
        self,
        engine: Engine,
        count: Callable[[Executor], C],
        *,
        max_age: timedelta,
        what: str,
        exact: Callable[[C], bool] = lambda last: False,
    ) -> None:
        self.engine = engine
        self.what = what
        self.max_age = max_age
        self._count = count
        #: Whether, given the last count, the next page counts again itself (cheap enough).
        self._exact = exact
        self._lock = threading.Lock()
        self._last: C | None = None
        #: Bumped by `invalidate`: a recount begun before it does not overwrite what follows.
        self._generation = 0
        #: The recount under way, if any (tests join it).
        self.recount: threading.Thread | None = None

    def invalidate(self) -> None:
        """Forget the last count: the next page counts afresh (after an action changed it)."""
        with self._lock:
            self._last = None
            self._generation += 1

    def get(self) -> C:
        """The last count; the first call counts, a call finding it stale starts a recount."""
        with self._lock:
            last = self._last
            if last is not None and not self._exact(last):
                stale = clock.now() - last.counted_at >= self.max_age
                if stale and (self.recount is None or not self.recount.is_alive()):
                    self.recount = threading.Thread(
                        target=self._recount, name="sagabox-web-counts", daemon=True
                    )
                    self.recount.start()
                return last
        return self._refresh()

    def _recount(self) -> None:
        try:
            self._refresh()
        except Exception:  # the stale count stays shown, and the next stale page retries
            log.warning("recounting %s failed", self.what, exc_info=True)

    def _refresh(self) -> C:
        with self._lock:
            generation = self._generation
        with self.engine.connect() as connection:
            counted = self._count(connection)
        with self._lock:
            if generation == self._generation:
                self._last = counted
        return counted


class CountsCache(Recounted[TypeStateCounts]):
    """Saga instances by type and state, recounted in the background once `max_age` old."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: timedelta = timedelta(minutes=1),
        count: Callable[[Executor], TypeStateCounts] = count_by_type_and_state,
    ) -> None:
        super().__init__(engine, count, max_age=max_age, what="sagas by type and state")


class GroupsCache(Recounted[GroupCounts]):
    """The dead-letter groups: counted by every page up to `exact_letters` letters, past that
    recounted in the background once `max_age` old."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: timedelta = timedelta(seconds=10),
        exact_letters: int = EXACT_LETTERS,
        count: Callable[[Executor], GroupCounts] = count_groups,
    ) -> None:
        super().__init__(
            engine,
            count,
            max_age=max_age,
            what="dead-letter groups",
            exact=lambda last: last.total <= exact_letters,
        )
