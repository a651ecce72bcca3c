"""Engines and dialects: the supported databases, and an engine set up the way sagabox needs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.orm import Session

from outbox.errors import UnsupportedDatabase

#: Dialect name → what sagabox calls it in errors. Plug points stay small lookup tables.
SUPPORTED = {"postgresql": "PostgreSQL (psycopg 3)", "sqlite": "SQLite"}

Executor = Session | Connection


def dialect_of(executor: Executor) -> str:
    """Name the dialect behind a session or connection, refusing ones sagabox does not support."""
    if isinstance(executor, Connection):
        name = executor.dialect.name
    else:
        name = executor.get_bind().dialect.name
    return check_dialect(name)


# Dialect → an INSERT that does nothing when the row's unique key exists. On PostgreSQL a second
# transaction inserting the same key waits for the first, then does nothing (or inserts, if the
# first rolled back), and neither transaction is aborted, unlike catching an IntegrityError.
INSERTS_IGNORING_CONFLICTS: dict[str, Callable[[Table], Any]] = {
    "postgresql": lambda table: pg_insert(table).on_conflict_do_nothing(),
    "sqlite": lambda table: sqlite_insert(table).on_conflict_do_nothing(),
}


def insert_ignoring_conflicts(executor: Executor, table: Table) -> Insert:
    """An INSERT into `table` that skips rows whose unique key exists, on the executor's dialect.

    Add `.returning(...)` to learn whether the row went in (rowcount is not reliable for this
    across drivers; SQLite has RETURNING from 3.35).
    """
    insert: Insert = INSERTS_IGNORING_CONFLICTS[dialect_of(executor)](table)
    return insert


def check_dialect(name: str) -> str:
    """Return `name` if sagabox supports it; otherwise say which databases it does support."""
    if name not in SUPPORTED:
        raise UnsupportedDatabase(
            f"sagabox does not support the {name!r} dialect; use one of: "
            + ", ".join(SUPPORTED.values())
        )
    return name


def database_url(url: str | URL) -> URL:
    """Parse a database URL, choosing psycopg 3 for plain `postgresql://` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    check_dialect(parsed.get_backend_name())
    return parsed


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for sagabox's own processes (relay, worker, CLI, test harness).

    A service keeps its own engine; `configure_sqlite` is the one thing worth copying from here.
    """
    engine = create_engine(database_url(url), **kwargs)
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
    return engine


def configure_sqlite(engine: Engine, *, busy_timeout_ms: int = 30_000) -> None:
    """Make SQLite safe for several processes writing one file: WAL, and write-locking BEGIN.

    Python's sqlite3 starts transactions lazily, so two transactions that read and then write
    can deadlock on the lock upgrade, which no timeout resolves. `BEGIN IMMEDIATE` takes the
    write lock up front; with WAL, readers in other processes are not blocked by it.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# "no such table: sagabox_x" (SQLite), 'relation "sagabox_x" does not exist' (PostgreSQL).
_MISSING_TABLE = re.compile(
    r"no such table: (?:\w+\.)?(?P<sqlite>sagabox_\w+)"
    r'|relation "(?:\w+\.)?(?P<postgresql>sagabox_\w+)" does not exist'
)


def missing_table_hint(error: BaseException) -> str | None:
    """What to do when `error` says one of sagabox's tables does not exist, else None."""
    match = _MISSING_TABLE.search(str(error))
    if match is None:
        return None
    table = match["sqlite"] or match["postgresql"]
    return (
        f"sagabox's table {table} does not exist in this database: create sagabox's tables "
        "with `sagabox db upgrade --db URL` (or sagabox.migrate.upgrade) before using it"
    )


@event.listens_for(Engine, "handle_error")
def _hint_missing_tables(context: ExceptionContext) -> None:
    # On every engine, the service's own included: sagabox's statements run on it. The error
    # keeps its class (callers tell outages from bad input by it) and gains a first line.
    hint = missing_table_hint(context.original_exception)
    error = context.sqlalchemy_exception
    if hint is not None and error is not None and hasattr(error, "add_detail"):
        error.add_detail(hint)
