"""Timeouts and reminders: messages a saga schedules for itself, as outbox rows due later.

A scheduled timeout is an ordinary outbox row with a future due time, addressed to the saga's
endpoint, so it survives restarts and needs no scheduler process. The saga row remembers each
pending timeout by name with the id of the message it expects; a timeout whose id no longer
matches (cancelled, replaced, its state left, the saga finished) is stale: journaled, never fired.
"""

from __future__ import annotations

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
