"""Operator actions on pending timeouts: list them, cancel, reschedule or fire one now, logged.

A pending timeout is two things kept equal (see `sagas.timeouts`): an entry in the saga row's
`timeouts` naming the message id it expects, and the outbox row carrying that message. Each
action changes both in the caller's transaction and bumps the saga's version, so a worker that
loaded the saga before the action fails its save and redoes the message against the new
pending set: a cancelled or moved timeout can never fire from a stale copy. The action goes to
the saga's journal (its timeline) and to the operator log with who did it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, literal, null, select, update

from outbox import clock
from outbox.database import Executor, dialect_of
from outbox.operator_log import record_action
from outbox.sync_only import refuse_async_call
from outbox.tables import outbox_messages
from sagas.errors import ConcurrencyConflict, TimeoutAlreadySent, TimeoutNotPending
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import PendingTimeout, next_due

#: The journal's outcome for a line an operator's action wrote.
OPERATOR_OUTCOME = "operator"
#: The furthest a timeout is moved from now either way: a time past it is a typo, and near the
#: ends of the calendar a repeating timeout's next time leaves the range of a datetime.
FURTHEST_MOVE = timedelta(days=100 * 365)


@dataclass(frozen=True)
class TimeoutEntry:
    """A pending timeout, with the saga it belongs to."""

    saga_type: str
    correlation_id: str
    name: str
    pending: PendingTimeout

    @property
    def due_at(self) -> datetime:
        return self.pending.due_at

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_type": self.saga_type,
            "correlation_id": self.correlation_id,
            "name": self.name,
            **self.pending.to_json(),
        }


def list_timeouts(
    executor: Executor,
    *,
    saga_type: str | None = None,
    correlation_id: str | None = None,
    due_before: datetime | None = None,
    limit: int = 100,
) -> list[TimeoutEntry]:
    """Pending timeouts, soonest first: of one saga type or instance, or due before a time."""
    refuse_async_call(executor, "list_timeouts")
    c = saga_instances.c
    query = (
        select(c.saga_type, c.correlation_id, c.timeouts)
        .where(c.next_timeout_at.is_not(None), c.finished_at.is_(None))
        .order_by(c.next_timeout_at, c.id)
        .limit(limit)
    )
    if saga_type is not None:
        query = query.where(c.saga_type == saga_type)
    if correlation_id is not None:
        query = query.where(c.correlation_id == correlation_id)
    if due_before is not None:
        query = query.where(c.next_timeout_at < clock.ensure_aware(due_before, what="due_before"))
    entries = [
        TimeoutEntry(row.saga_type, row.correlation_id, name, PendingTimeout.from_json(value))
        for row in executor.execute(query)
        for name, value in (row.timeouts or {}).items()
    ]
    if due_before is not None:
        entries = [entry for entry in entries if entry.due_at < due_before]
    entries.sort(key=lambda entry: (entry.due_at, entry.saga_type, entry.correlation_id))
    return entries[:limit]


def cancel_timeout(
    executor: Executor, saga_type: str, correlation_id: str, name: str, *, actor: str
) -> TimeoutEntry:
    """Stop the saga waiting for timeout `name`; its message is deleted, or found stale if it
    was already on its way. Returns what was cancelled."""
    refuse_async_call(executor, "cancel_timeout")
    row, pending = _pending(executor, saga_type, correlation_id, name)
    executor.execute(
        delete(outbox_messages).where(outbox_messages.c.message_id == pending.message_id)
    )
    timeouts = {key: value for key, value in row.timeouts.items() if key != name}
    _save(executor, row, timeouts, f"timeout {name} cancelled by {actor}")
    entry = TimeoutEntry(saga_type, correlation_id, name, pending)
    _log(executor, actor, "timeout.cancel", entry, {})
    return entry


def reschedule_timeout(
    executor: Executor,
    saga_type: str,
    correlation_id: str,
    name: str,
    due_at: datetime,
    *,
    actor: str,
) -> TimeoutEntry:
    """Move timeout `name` to `due_at` (earlier or later); a repeating one's later deliveries
    follow from the new time. Returns the timeout as it is now pending."""
    refuse_async_call(executor, "reschedule_timeout")
    due_at = _reachable(due_at)
    row, pending = _pending(executor, saga_type, correlation_id, name)
    o = outbox_messages.c
    # The relay deletes a row as it ships it, holding the row's lock meanwhile: an update that
    # finds no row means the message is already with the worker.
    moved = executor.execute(
        update(outbox_messages)
        .where(o.message_id == pending.message_id)
        .values(available_at=due_at)
        .returning(o.id)
    ).all()
    if not moved:
        raise TimeoutAlreadySent(
            f"{saga_type} {correlation_id!r}: timeout {name!r} (message {pending.message_id}) "
            "already left the outbox and is being handled; cancel it instead if it must not "
            "act, or let it fire"
        )
    _notify(executor)
    moved_entry = PendingTimeout(
        message_id=pending.message_id,
        state=pending.state,
        due_at=due_at,
        outlive_state=pending.outlive_state,
        every=pending.every,
        remaining=pending.remaining,
    )
    timeouts = {**row.timeouts, name: moved_entry.to_json()}
    verb = "fired now" if due_at <= clock.now() else f"moved to {due_at:%Y-%m-%d %H:%M:%S}"
    _save(executor, row, timeouts, f"timeout {name} {verb} by {actor}")
    entry = TimeoutEntry(saga_type, correlation_id, name, moved_entry)
    _log(
        executor,
        actor,
        "timeout.reschedule",
        entry,
        {"from": pending.due_at.isoformat(), "to": due_at.isoformat()},
    )
    return entry


def fire_timeout(
    executor: Executor, saga_type: str, correlation_id: str, name: str, *, actor: str
) -> TimeoutEntry:
    """Make timeout `name` due now: the relay ships it on its next pass."""
    refuse_async_call(executor, "fire_timeout")
    return reschedule_timeout(executor, saga_type, correlation_id, name, clock.now(), actor=actor)


def _reachable(due_at: datetime) -> datetime:
    """`due_at` in UTC, or `ValueError` if it is over 100 years from now."""
    far = ValueError(
        f"{due_at.isoformat()} is more than 100 years from now: move a timeout within "
        f"{FURTHEST_MOVE.days} days of the present"
    )
    try:
        due_at = clock.ensure_aware(due_at, what="due_at")
    except OverflowError:  # in UTC it falls off either end of the calendar
        raise far from None
    if abs(due_at - clock.now()) > FURTHEST_MOVE:
        raise far
    return due_at


def _pending(
    executor: Executor, saga_type: str, correlation_id: str, name: str
) -> tuple[Any, PendingTimeout]:
    c = saga_instances.c
    row = executor.execute(
        select(c.id, c.saga_type, c.correlation_id, c.incarnation, c.state, c.version, c.timeouts)
        .where(c.saga_type == saga_type, c.correlation_id == correlation_id)
        .with_for_update()
    ).first()
    if row is None:
        raise TimeoutNotPending(
            f"no {saga_type} saga has id {correlation_id!r}: `sagabox sagas list --type "
            f"{saga_type}` shows the ones there are"
        )
    value = (row.timeouts or {}).get(name)
    if value is None:
        waiting = ", ".join(sorted(row.timeouts or {})) or "none"
        raise TimeoutNotPending(
            f"{saga_type} {correlation_id!r} is not waiting for a timeout named {name!r} "
            f"(pending: {waiting}); `sagabox timeouts list --type {saga_type}` shows them"
        )
    return row, PendingTimeout.from_json(value)


def _save(executor: Executor, row: Any, timeouts: dict[str, Any], trigger: str) -> None:
    parsed = {key: PendingTimeout.from_json(value) for key, value in timeouts.items()}
    c = saga_instances.c
    saved = executor.execute(
        update(saga_instances)
        .where(c.id == row.id, c.version == row.version)
        .values(
            version=row.version + 1,
            timeouts=timeouts or null(),
            next_timeout_at=next_due(parsed),
        )
        .returning(c.id)
    ).first()
    if saved is None:
        raise ConcurrencyConflict(
            f"{row.saga_type} {row.correlation_id!r} changed while its timeouts were being "
            "edited; look at it again and retry"
        )
    executor.execute(
        insert(saga_journal).values(
            saga_id=row.id,
            saga_type=row.saga_type,
            correlation_id=row.correlation_id,
            incarnation=row.incarnation,
            version=row.version + 1,
            from_state=row.state,
            to_state=row.state,
            trigger=trigger[:255],
            message_id=uuid.uuid4(),
            outcome=OPERATOR_OUTCOME,
            at=clock.now(),
        )
    )


def _log(
    executor: Executor, actor: str, action: str, entry: TimeoutEntry, extra: dict[str, Any]
) -> None:
    record_action(
        executor,
        actor=actor,
        action=action,
        subject=f"{entry.saga_type} {entry.correlation_id} {entry.name}",
        detail={**entry.to_json(), **extra},
    )


def _notify(executor: Executor) -> None:
    """Wake PostgreSQL relays: moving a row earlier inserts nothing, so no trigger fires."""
    if dialect_of(executor) == "postgresql":
        # The channel migration 0003's trigger notifies (relay.wakeup.CHANNEL).
        executor.execute(select(func.pg_notify(literal("sagabox_outbox"), literal(""))))
