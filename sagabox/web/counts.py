"""The overview's saga type x state counts, counted at most once a minute and shown with their age.

Counting a million saga rows by type and state is an index-only scan of the whole (type, state,
correlation id) index: a few hundred milliseconds, far too much for a page that refreshes every
few seconds. So the count is cached: a page finding it older than `max_age` starts one recount in
a background thread and shows the previous count meanwhile, with the time it was taken, so no
page waits for it but the very first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from outbox import clock
from outbox.database import Executor
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


class CountsCache:
    """The last count and at most one recount under way (stale while revalidating)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_age: timedelta = timedelta(minutes=1),
        count: Callable[[Executor], TypeStateCounts] = count_by_type_and_state,
    ) -> None:
        self.engine = engine
        self.max_age = max_age
        self._count = count
        self._lock = threading.Lock()
        self._last: TypeStateCounts | None = None
        #: The recount under way, if any (tests join it).
        self.recount: threading.Thread | None = None

    def get(self) -> TypeStateCounts:
        """The last count; the first call counts, a call finding it stale starts a recount."""
        with self._lock:
            last = self._last
            if last is not None:
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
            log.warning("recounting sagas by type and state failed", exc_info=True)

    def _refresh(self) -> TypeStateCounts:
        with self.engine.connect() as connection:
            counted = self._count(connection)
        with self._lock:
            self._last = counted
        return counted
