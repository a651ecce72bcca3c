"""The operator log: one row per action a person took on timeouts or dead letters, and who."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from outbox import clock
from outbox.database import Executor
from outbox.sync_only import refuse_async_call
from outbox.tables import operator_actions

_RECORD = insert(operator_actions)


@dataclass(frozen=True)
class OperatorAction:
    """One logged action."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


def default_actor() -> str:
    """Who runs this process ($USER, or the login name), for actions nobody named."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no $USER and no passwd entry, as in some containers
        return "unknown"


def record_action(
    executor: Executor, *, actor: str, action: str, subject: str, detail: dict[str, Any]
) -> None:
    """Log an action in the caller's transaction: it is logged exactly when it happened."""
    if not actor.strip():
        raise ValueError("an operator action needs an actor: pass who does it (e.g. --actor)")
    executor.execute(
        _RECORD,
        {
            "at": clock.now(),
            "actor": actor.strip()[:255],
            "action": action,
            "subject": subject[:512],
            "detail": detail,
        },
    )


def recent_actions(executor: Executor, *, limit: int = 50) -> list[OperatorAction]:
    """The latest actions first."""
    refuse_async_call(executor, "recent_actions")
    rows = executor.execute(
        select(operator_actions).order_by(operator_actions.c.id.desc()).limit(limit)
    )
    return [OperatorAction(**row._mapping) for row in rows]
