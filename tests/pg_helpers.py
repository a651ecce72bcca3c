"""Helpers for tests on a real PostgreSQL: sessions that wait on each other, and sagabox's
tables copied into another schema."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = :name AND wait_event_type = 'Lock'"
)


def copy_into_schema(connection: Connection, table: str, schema: str = "elsewhere") -> None:
    """Create `schema` and in it an empty copy of sagabox's `table` (columns, defaults,
    indexes), for an engine that maps sagabox's tables there (`schema_translate_map`)."""
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    connection.execute(text(f"CREATE TABLE {schema}.{table} (LIKE {table} INCLUDING ALL)"))


def wait_until_blocked(engine: Engine, application_name: str, timeout: float = 10) -> None:
    """Wait (bounded) until the named PostgreSQL session waits on a lock."""
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while connection.execute(_WAITING, {"name": application_name}).scalar() == 0:
            # pg_stat_activity is a snapshot per transaction: end it to see fresh activity.
            connection.rollback()
            if time.monotonic() > deadline:
                pytest.fail(f"{application_name} never waited on the first transaction's lock")
            time.sleep(0.01)  # polling an observable state, not sleeping in place of it


class InThread:
    """Run `work(connection)` in its own transaction on another thread, under a session name
    that `wait_until_blocked` can watch; keep its result or its exception."""

    def __init__(self, engine: Engine, name: str, work: Callable[[Connection], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine, name, work))

    def _run(self, engine: Engine, name: str, work: Callable[[Connection], Any]) -> None:
        try:
            with engine.connect() as connection:
                connection.execute(
                    text("SELECT set_config('application_name', :n, false)"), {"n": name}
                )
                connection.commit()
                with connection.begin():
                    self.result = work(connection)
        except BaseException as exc:  # handed to the test thread, which asserts on it
            self.error = exc

    def start(self) -> InThread:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the other transaction never finished"
