"""Dead letters grouped by endpoint, message type and reason, replayed or discarded with a log.

An operator fixes one cause and then deals with every letter it produced: the group is the
unit, and each replay or discard names who did it in the operator log (`outbox.operator_log`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select

from outbox.database import Executor
from outbox.dead_letters import discard_dead_letter, get_dead_letter, replay_dead_letter
from outbox.operator_log import record_action
from outbox.sync_only import refuse_async_call
from outbox.tables import UTCDateTime
from outbox.tables import dead_letters as t


@dataclass(frozen=True)
class DeadLetterGroup:
    """The dead letters that share an endpoint, a message type and a reason."""

    endpoint: str
    type: str | None
    reason: str
    count: int
    first_failed_at: datetime
    last_failed_at: datetime


def dead_letter_groups(executor: Executor, *, limit: int = 200) -> list[DeadLetterGroup]:
    """The groups, the largest first."""
    refuse_async_call(executor, "dead_letter_groups")
    count = func.count().label("count")
    query = (
        select(
            t.c.endpoint,
            t.c.type,
            t.c.reason,
            count,
            func.min(t.c.first_failed_at, type_=UTCDateTime()).label("first_failed_at"),
            func.max(t.c.last_failed_at, type_=UTCDateTime()).label("last_failed_at"),
        )
        .group_by(t.c.endpoint, t.c.type, t.c.reason)
        .order_by(count.desc(), t.c.endpoint, t.c.type, t.c.reason)
        .limit(limit)
    )
    return [
        DeadLetterGroup(
            row.endpoint,
            row.type,
            row.reason,
            row._mapping["count"],
            row.first_failed_at,
            row.last_failed_at,
        )
        for row in executor.execute(query)
    ]


def group_ids(
    executor: Executor, endpoint: str, type_name: str | None, reason: str, *, limit: int = 10_000
) -> list[int]:
    """The ids of one group's letters, oldest first."""
    refuse_async_call(executor, "group_ids")
    query: Select[tuple[int]] = (
        select(t.c.id)
        .where(t.c.endpoint == endpoint, t.c.reason == reason)
        .order_by(t.c.id)
        .limit(limit)
    )
    query = query.where(t.c.type.is_(None) if type_name is None else t.c.type == type_name)
    return [row.id for row in executor.execute(query)]


def replay_logged(executor: Executor, dead_letter_id: int, *, actor: str) -> None:
    """Replay one dead letter (`replay_dead_letter`) and log who did it, in one transaction."""
    refuse_async_call(executor, "replay_logged")
    letter = get_dead_letter(executor, dead_letter_id)
    message_id = replay_dead_letter(executor, dead_letter_id)
    record_action(
        executor,
        actor=actor,
        action="dead_letter.replay",
        subject=f"dead letter {dead_letter_id}",
        detail={"endpoint": letter.endpoint, "type": letter.type, "message_id": str(message_id)},
    )


def discard_logged(executor: Executor, dead_letter_id: int, *, actor: str) -> None:
    """Discard one dead letter for good and log who did it, in one transaction."""
    refuse_async_call(executor, "discard_logged")
    letter = get_dead_letter(executor, dead_letter_id)
    discard_dead_letter(executor, dead_letter_id)
    record_action(
        executor,
        actor=actor,
        action="dead_letter.discard",
        subject=f"dead letter {dead_letter_id}",
        detail={
            "endpoint": letter.endpoint,
            "type": letter.type,
            "message_id": str(letter.message_id) if letter.message_id else None,
            "reason": letter.reason,
        },
    )
