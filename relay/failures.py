"""Sorting the worker's failures in one place: the input is bad, or the database is unavailable.

Anything that goes wrong while a delivery is checked, decoded, upcast, validated or recorded is
bad input — that one message is dead-lettered with the reason, and the rest keep flowing —
unless it means the database cannot be used right now: then the message goes back to the queue
and the worker backs off. Unknown exceptions count as bad input: requeueing a message that fails
for a reason of its own would block everything behind it, forever.

Handler errors are sorted here too: those worth an immediate retry (a lost optimistic-locking
race, a dropped connection) and the rest, retried later with a delay.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import exc as sa

Failure = Literal["database_unavailable", "bad_input"]

# Errors that mean "no usable connection now": a server restarting or unreachable, SQLite
# locked by another writer, a dead connection, a pool with nothing to hand out.
_UNAVAILABLE = (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError)


def classify(error: BaseException) -> Failure:
    """What a failure to handle a delivery means: `database_unavailable` or `bad_input`."""
    return "database_unavailable" if database_unavailable(error) else "bad_input"


def database_unavailable(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says the database cannot be used now."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__  # explicit chaining only: `raise X from db_error`
    return False


def retry_at_once(error: BaseException, transient: tuple[type[BaseException], ...]) -> bool:
    """Whether a handler's `error` is worth an immediate retry: one of the `transient` types
    (an optimistic concurrency conflict, say), or a connection the database dropped."""
    if isinstance(error, transient):
        return True
    return isinstance(error, sa.DBAPIError) and error.connection_invalidated


class BatchInterrupted(Exception):
    """The database failed partway through a batch, after the outcomes of the deliveries at
    `settled` (their indexes) were committed: those must be acknowledged, not delivered again
    (a dead letter or a retry is written outside the inbox, and would be written twice)."""

    def __init__(self, settled: list[int]) -> None:
        super().__init__(f"the database failed after {len(settled)} of a batch were settled")
        self.settled = settled
