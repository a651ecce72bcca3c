"""The inbox insert and the saga read of an unbatched step in one statement, where the dialect can.

An unbatched worker recorded a message in the inbox, then read the saga row it was for: two round
trips, each a wait for a PostgreSQL backend on a busy machine. On PostgreSQL the insert goes in a
data-modifying CTE (`INSERT ... ON CONFLICT DO NOTHING RETURNING`) beside the saga read, so one
round trip says both whether the message is new and what the saga row holds. The guarantee is the
inbox's own: of two transactions recording the same id, exactly one gets it back as new (the
second waits for the first, as with the plain insert). SQLite keeps the two statements
(`record_and_load` falls back to them), so both dialects answer the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outbox.database import Executor, dialect_of
from outbox.inbox import Inbox
from outbox.prebuilt import Prebuilt
from outbox.tables import inbox_messages
from sagas import requests
from sagas.batch import current_batch
from sagas.tables import saga_instances

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from outbox.messages import Message
    from sagas.definition import Saga
    from sagas.runtime import SagaRuntime

#: The column that says whether the inbox row went in (1) or was there already (0).
RECORDED = "sagabox_recorded"

_KEY = and_(
    saga_instances.c.saga_type == bindparam("b_saga_type"),
    saga_instances.c.correlation_id == bindparam("b_correlation_id"),
)


def _statement() -> Select[Any]:
    """Built once: the worker sends it for every message (prepared by psycopg like the rest)."""
    recorded = (
        pg_insert(inbox_messages)
        .values(
            consumer=bindparam("consumer"),
            message_id=bindparam("message_id"),
            processed_at=bindparam("processed_at"),
        )
        .on_conflict_do_nothing()
        .returning(inbox_messages.c.message_id)
        .cte("recorded")
    )
    new = select(func.count()).select_from(recorded).scalar_subquery().label(RECORDED)
    # One row whatever the saga table holds: the saga's columns are NULL when it does not exist.
    one = select(literal(1).label("one")).subquery("one")
    return select(new, *saga_instances.c).select_from(one.outerjoin(saga_instances, _KEY))


_RECORD_AND_LOAD = Prebuilt(_statement())
_LOAD = select(saga_instances).where(_KEY)


def supported(executor: Executor) -> bool:
    """Whether this database records and reads in one statement (PostgreSQL)."""
    return dialect_of(executor) == "postgresql"


def record_and_load(
    executor: Executor, inbox: Inbox, message_id: Any, saga_type: str, correlation_id: str
) -> tuple[bool, Mapping[Any, Any] | None]:
    """Record `message_id` in `inbox`; if it is new, also read the saga row (`saga_type`,
    `correlation_id`). Returns (new, the row or None); (False, None) for a message recorded
    before, whose saga row is not for this transaction to read."""
    key = {"b_saga_type": saga_type, "b_correlation_id": correlation_id}
    if not supported(executor):
        if not inbox.record(message_id):
            return False, None
        return True, executor.execute(_LOAD, key).mappings().first()
    # Through the DBAPI cursor (`outbox.prebuilt`): sent for every message an unbatched
    # worker handles. It always returns one row.
    row = _RECORD_AND_LOAD.first(executor, {**inbox.row(message_id), **key})
    if row is None or not row[RECORDED]:
        return False, None
    return True, None if row["id"] is None else row


def first_read(
    runtime: SagaRuntime, session: Session, message: Message
) -> tuple[type[Saga[Any]], str, list[type[Saga[Any]]]] | None:
    """The saga class and correlation id `runtime.handle` reads first, and the classes after
    it; None when they cannot be known before the inbox check, or a batch reads them."""
    if current_batch(session) is not None or not supported(session):
        return None
    try:
        if requests.addressed_saga(runtime, message) is not None:
            return None
        targets = runtime.targets(message)
        if not targets:
            return None
        return targets[0], targets[0].correlate(message, session), targets[1:]
    except Exception:  # `handle` raises it again, after the inbox check
        return None
