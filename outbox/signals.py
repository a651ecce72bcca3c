"""In-process wake-up: a relay running in the writer's process hears of new outbox rows at commit.

Across processes PostgreSQL's LISTEN/NOTIFY (or the poll interval) does this job; inside one
process a callback is cheaper and also works on SQLite. Only sessions are watched: SQLAlchemy has
no after-commit event for a bare connection, whose writes the relay finds by polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

from outbox.database import Executor

_KEY = "sagabox.outbox_written"
_lock = threading.Lock()
_callbacks: list[Callable[[], None]] = []
_installed = False


def on_outbox_commit(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after each session commit that wrote outbox rows; return an unsubscriber.

    The callback runs in the committing thread, so it must be quick (set an event, say).
    """
    global _installed
    with _lock:
        if not _installed:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
            _installed = True
        _callbacks.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _callbacks:
                _callbacks.remove(callback)

    return unsubscribe


def mark_written(executor: Executor) -> None:
    """Note that `executor`'s transaction wrote outbox rows (a no-op when nobody listens)."""
    if _callbacks and isinstance(executor, Session):
        executor.info[_KEY] = True


def _after_commit(session: Session) -> None:
    if session.info.pop(_KEY, False):
        for callback in list(_callbacks):
            callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)
