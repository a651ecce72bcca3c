"""Timeouts and reminders: messages a saga schedules for itself, as outbox rows due later.

A scheduled timeout is an ordinary outbox row with a future due time, addressed to the saga's
endpoint, so it survives restarts and needs no scheduler process. The saga row remembers each
pending timeout by name with the id of the message it expects; a timeout whose id no longer
matches (cancelled, replaced, its state left, the saga finished) is stale: journaled, never fired.

The bookkeeping is decided here by pure functions (`fired_by`, `settle`, `repetition`): pending
set + calls + states in, pending set and outbox writes out, so it is tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from outbox.messages import Message


class Timeout(Message, abstract=True):
    """Base of the messages a saga schedules for itself with `ctx.schedule(...)`.

    Subclass it like any message (`class OfferReminder(Timeout, type="loans.OfferReminder")`)
    and declare a transition for it. `saga` and `timeout` are filled in when it is scheduled:
    they say which saga type and which named timeout it belongs to.
    """

    saga: str = ""
    timeout: str = ""


@dataclass(frozen=True)
class PendingTimeout:
    """A timeout the saga waits for: which message, set in which state, due when."""

    message_id: UUID
    state: str
    due_at: datetime
    outlive_state: bool = False
    every: timedelta | None = None
    #: Deliveries still to come, this one included; None repeats until cancelled.
    remaining: int | None = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": str(self.message_id),
            "state": self.state,
            "due_at": self.due_at.isoformat(),
            "outlive_state": self.outlive_state,
            "every": self.every.total_seconds() if self.every is not None else None,
            "remaining": self.remaining,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingTimeout:
        every = data.get("every")
        return cls(
            message_id=UUID(data["message_id"]),
            state=data["state"],
            due_at=datetime.fromisoformat(data["due_at"]),
            outlive_state=bool(data.get("outlive_state", False)),
            every=timedelta(seconds=every) if every is not None else None,
            remaining=data.get("remaining", 1),
        )


@dataclass(frozen=True)
class Scheduled:
    """A `schedule` call an action made, applied when the saga is saved."""

    name: str
    message: Timeout
    due_at: datetime
    outlive_state: bool
    every: timedelta | None
    remaining: int | None
    #: The state a repetition belongs to; None: the state the transition leads to.
    state: str | None = None


# --- settlement: pure decisions (state + message + clock -> writes), no database ------------


def fired_by(timeouts: Mapping[str, PendingTimeout], message: Timeout) -> PendingTimeout | None:
    """The pending timeout `message` delivers, or None when it is stale: cancelled, replaced,
    or set in a state the saga has left (its id is no longer the one expected)."""
    pending = timeouts.get(message.timeout)
    if pending is None or pending.message_id != message.message_id:
        return None
    return pending


def repetition(fired: PendingTimeout, message: Timeout, message_id: UUID) -> Scheduled | None:
    """The next delivery of a repeating timeout that just fired, in the state that set it, due
    one interval after the fired one (from the schedule, not from now: no drift); None when
    it does not repeat or that was its last delivery."""
    remaining = None if fired.remaining is None else fired.remaining - 1
    if fired.every is None or remaining == 0:
        return None
    due = fired.due_at + fired.every
    next_message = message.model_copy(
        update={"message_id": message_id, "occurred_at": due, "causation_id": message.message_id}
    )
    return Scheduled(
        message.timeout,
        next_message,
        due,
        fired.outlive_state,
        fired.every,
        remaining,
        fired.state,
    )


@dataclass(frozen=True)
class Settlement:
    """What a transition does to the saga's timeouts: the pending set it leaves, the outbox rows
    to delete (cancelled, replaced or dropped timeouts) and the rows to write (new ones)."""

    timeouts: dict[str, PendingTimeout]
    dropped: list[UUID]
    written: list[Scheduled]


def settle(
    timeouts: Mapping[str, PendingTimeout],
    calls: Sequence[Scheduled | str],
    *,
    before: str,
    after: str,
    finished: bool,
) -> Settlement:
    """Apply a transition's `schedule`/`cancel` calls (in order) to the pending `timeouts`.

    A timeout belongs to the state the saga is in after the transition that scheduled it;
    leaving that state drops it (unless it was scheduled to outlive it), and finishing drops
    them all. Only the last of several calls for one name is written: a replaced timeout never
    reaches the outbox, so it cannot fire.
    """
    pending = dict(timeouts)
    dropped: list[UUID] = []
    fresh: dict[UUID, Scheduled] = {}

    def drop(name: str) -> None:
        gone = pending.pop(name, None)
        if gone is not None and fresh.pop(gone.message_id, None) is None:
            dropped.append(gone.message_id)  # only rows already in the outbox need deleting

    if finished:
        for name in list(pending):
            drop(name)
        return Settlement(pending, dropped, [])
    if after != before:
        for name, entry in list(pending.items()):
            if entry.state != after and not entry.outlive_state:
                drop(name)
    for call in calls:
        if isinstance(call, str):
            drop(call)
            continue
        drop(call.name)
        state = call.state or after
        if state != after and not call.outlive_state:
            continue  # a repetition of a timeout whose state was just left
        pending[call.name] = PendingTimeout(
            message_id=call.message.message_id,
            state=state,
            due_at=call.due_at,
            outlive_state=call.outlive_state,
            every=call.every,
            remaining=call.remaining,
        )
        fresh[call.message.message_id] = call
    return Settlement(pending, dropped, list(fresh.values()))


def next_due(timeouts: Mapping[str, PendingTimeout]) -> datetime | None:
    """When the earliest pending timeout is due (None: none pending)."""
    return min((entry.due_at for entry in timeouts.values()), default=None)
