"""A prebuilt hot statement sent straight through the DBAPI cursor, with SQLAlchemy's own types.

An unbatched worker step sends two statements (`sagas.inbox_load`, `sagas.step_sql`), and a
relay batch two (the claim and the delete, `outbox.claim`); on a
2-core machine the step is bound by CPU, and SQLAlchemy's execute path (execution context, cache
key lookup, result metadata from `cursor.description`) cost about 150 µs of CPU per statement
against 75 µs for psycopg itself (bench/results/2026-12-02-unbatched.md). A `Prebuilt` compiles
its statement once per engine's dialect, keeps the bind and result processors of its column
types, and sends it on the cursor of the connection the session's transaction already holds: the
same SQL, the same transaction, the same parameters and values as `execute` would give. What it
keeps from the full path: errors go through the connection's own handling (the same
`sqlalchemy.exc` classes, `handle_error` events, a dropped connection invalidated), and an
engine with `before_cursor_execute` or `after_cursor_execute` listeners (instrumentation, tests
counting statements), or a session with `do_orm_execute` ones, gets the full path, so that every
statement is still seen; so does a connection with a `schema_translate_map`, which the SQL
compiled here would not follow. (`Session.execute` does not autoflush for these Core statements
either.)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import Compiled

from outbox.database import Executor

Processor = Callable[[Any], Any] | None


class _Compiled:
    """A statement compiled for one dialect, with its bind processors."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled: Compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # Every bind under the name the SQL renders (an anonymous literal's is `param_1`).
        names = compiled.bind_names  # type: ignore[attr-defined]
        # The values the statement holds itself (literals); the rest come with each call.
        self.defaults = {names[b]: b.effective_value for b in names if not b.required}
        self.binds: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in names.items()
        }
        #: The parameters' order for a positional paramstyle (SQLite's `?`), else None.
        self.order: list[str] | None = (
            list(compiled.positiontup or ()) if compiled.positional else None  # type: ignore[attr-defined]
        )
        self.columns = [
            (column.key, column.type) for column in getattr(statement, "selected_columns", ())
        ]
        # From the first result: its column names and their processors. One statement's
        # result has the same columns every time, and psycopg builds `cursor.description`
        # anew on each access (a column object each: a quarter of `first`'s CPU, read twice).
        self.names: list[str] | None = None
        self.results: list[Processor] | None = None
        #: Whether the statement returns rows (known after its first execution).
        self.returns_rows: bool | None = None


class Prebuilt:
    """`statement`, executed with the fewest Python layers the guarantees allow."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        # Per dialect object, not name: two engines of one database may differ in driver,
        # paramstyle or JSON serializer, and the compiled form keeps their bind processors.
        self._compiled: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def first(self, executor: Executor, parameters: Mapping[str, Any]) -> dict[str, Any] | None:
        """Execute with `parameters` in the executor's transaction; the first row as a dict
        (column name → value, processed as `execute` would), or None when there is none."""
        connection = _direct(executor)
        if connection is None:
            row = executor.execute(self.statement, dict(parameters)).mappings().first()
            return None if row is None else dict(row)
        found, names = self._run(connection, parameters, one=True)
        return dict(zip(names, found[0], strict=True)) if found else None

    def rows(self, executor: Executor, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with `parameters` in the executor's transaction; every row as a tuple in the
        statement's column order (processed as `execute` would), none for a statement that
        returns no rows. For a batch: one fetch, no `Row` objects."""
        connection = _direct(executor)
        if connection is None:
            result = executor.execute(self.statement, dict(parameters))
            # A statement without rows (a DELETE) has a closed result, which `all` would refuse.
            if not getattr(result, "returns_rows", True):
                return []
            return [tuple(row) for row in result]
        return self._run(connection, parameters)[0]

    def dicts(self, executor: Executor, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute with `parameters` in the executor's transaction; every row as a dict (column
        name → value, processed as `execute` would)."""
        connection = _direct(executor)
        if connection is None:
            return [
                dict(row) for row in executor.execute(self.statement, dict(parameters)).mappings()
            ]
        found, names = self._run(connection, parameters)
        return [dict(zip(names, row, strict=True)) for row in found]

    def count(self, executor: Executor, parameters: Mapping[str, Any]) -> int:
        """Execute a statement without rows (an UPDATE) with `parameters` in the executor's
        transaction; how many rows it matched, as `execute(...).rowcount` tells."""
        connection = _direct(executor)
        if connection is None:
            result: Any = executor.execute(self.statement, dict(parameters))
            return int(result.rowcount)
        counted: list[int] = []
        self._run(connection, parameters, counted=counted)
        return counted[0]

    def _run(
        self,
        connection: Connection,
        parameters: Mapping[str, Any],
        *,
        one: bool = False,
        counted: list[int] | None = None,
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """Send the statement on `connection`'s cursor: its rows (only the first with `one`),
        processed, and the names of its columns; the cursor's row count appended to
        `counted`, if given."""
        if not connection.in_transaction():
            # What `execute` does first (autobegin): on a connection nothing ran on yet, the
            # statement would run outside SQLAlchemy's transaction, and `commit` would not
            # commit it (PostgreSQL), or it would commit at once (SQLite, as sagabox sets it up).
            connection.begin()
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:
            compiled = self._compiled[dialect] = _Compiled(self.statement, dialect)
        values = {**compiled.defaults, **parameters}
        for name, process in compiled.binds.items():
            if process is not None:
                values[name] = process(values[name])
        cursor = None
        found: list[tuple[Any, ...]] = []
        try:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            order = compiled.order
            cursor.execute(compiled.sql, values if order is None else [values[n] for n in order])
            if counted is not None:
                counted.append(cursor.rowcount)
            if compiled.returns_rows is None:
                _describe(compiled, dialect, cursor.description)
            if compiled.returns_rows:
                if one:
                    first = cursor.fetchone()
                    found = [] if first is None else [first]
                else:
                    found = list(cursor.fetchall())
        except Exception as exc:
            # The full path's handling: the same exception classes, `handle_error` events,
            # and a connection the database dropped is invalidated.
            connection._handle_dbapi_exception(exc, compiled.sql, values, cursor, None)
        finally:
            if cursor is not None:
                cursor.close()
        if not found:
            return [], compiled.names or []
        names, processors = compiled.names, compiled.results
        assert names is not None
        assert processors is not None
        if not any(processors):
            return found, names  # the driver's rows are tuples already
        return [
            tuple(
                value if process is None or value is None else process(value)
                for value, process in zip(row, processors, strict=True)
            )
            for row in found
        ], names


def _describe(compiled: _Compiled, dialect: Dialect, description: Any) -> None:
    """Keep what the first result's description says: whether there are rows, their column
    names and processors. The attribute that tells the next call to skip it goes last."""
    if description:
        compiled.names = [column[0] for column in description]
        compiled.results = _result_processors(compiled, dialect, description)
    compiled.returns_rows = bool(description)


def _result_processors(compiled: _Compiled, dialect: Dialect, description: Any) -> list[Processor]:
    if len(compiled.columns) != len(description):
        return [None] * len(description)  # a textual statement: values as the driver gives them
    return [
        type_.dialect_impl(dialect).result_processor(dialect, column[1])
        for (_, type_), column in zip(compiled.columns, description, strict=True)
    ]


def _direct(executor: Executor) -> Connection | None:
    """The connection to send on the cursor of, or None when the full path must run."""
    session = executor if isinstance(executor, Session) else None
    connection = session.connection() if session is not None else executor
    assert isinstance(connection, Connection)
    if _listened(connection) or (session is not None and session.dispatch.do_orm_execute):
        return None
    return connection


def _listened(connection: Connection) -> bool:
    """Whether anything listens for the statements this connection sends, or changes them."""
    dispatch = connection.dispatch
    return (
        bool(dispatch.before_cursor_execute)
        or bool(dispatch.after_cursor_execute)
        # Not a listener, but the tables' schema is the connection's to say.
        or "schema_translate_map" in connection.get_execution_options()
    )
