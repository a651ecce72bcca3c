"""One statement for a saga step's writes on PostgreSQL: update, journal line and outbox rows.

Unbatched, a step used to send them one statement (one round trip) each. PostgreSQL runs
data-modifying CTEs in one statement, so the version-checked update, the journal line and the
messages the step emitted go in one round trip; the journal line and the outbox rows select from
the update's RETURNING, so a stale version writes none of them, as before. The statement is built
once per number of outbox rows and prepared by psycopg like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from outbox.database import Executor, dialect_of
from outbox.prebuilt import Prebuilt
from outbox.tables import outbox_messages
from outbox.writer import write_rows
from sagas.tables import saga_instances, saga_journal

# SQL NULL for no pending timeouts, as the store writes it ("stuck" queries test for it).
_NULLABLE_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

_SAGA_COLUMNS = (
    "state", "data", "version", "definition_version", "data_version", "updated_at",
    "finished_at", "timeouts", "next_timeout_at",
)  # fmt: skip
_JOURNAL_COLUMNS = (
    "saga_id", "saga_type", "correlation_id", "incarnation", "version", "definition_version",
    "from_state", "to_state", "trigger", "message_id", "outcome", "at",
)  # fmt: skip
_OUTBOX_COLUMNS = (
    "message_id", "type", "destination", "partition_key", "payload", "headers", "available_at",
    "attempts", "created_at",
)  # fmt: skip

#: The outbox rows the one statement carries at most; a step that sends more (a fan-out) writes
#: the rest right after it, in one multi-row insert. PostgreSQL takes at most 65,535 parameters
#: in a statement (9 an outbox row), and a statement is built and cached per number of rows.
MAX_ROWS = 32

_STATEMENTS: dict[int, Prebuilt] = {}


def _cast(table: Any, column: str, name: str) -> str:
    """A bound parameter cast to its column's type: a VALUES list has no column to infer it."""
    sql_type = table.c[column].type.dialect_impl(_PG_DIALECT).compile(dialect=_PG_DIALECT)
    return f"CAST(:{name} AS {sql_type})"


def _statement(rows: int) -> Prebuilt:
    statement = _STATEMENTS.get(rows)
    if statement is not None:
        return statement
    s, j, o = saga_instances, saga_journal, outbox_messages
    sets = ", ".join(f"{column} = {_cast(s, column, 's_' + column)}" for column in _SAGA_COLUMNS)
    # Names from this package's tables, every value a bound parameter.
    sql = (
        f"WITH u AS (UPDATE {s.name} SET {sets} WHERE id = CAST(:b_id AS UUID) "  # noqa: S608
        "AND version = CAST(:b_expected_version AS INTEGER) RETURNING id), "
        f"j AS (INSERT INTO {j.name} ({', '.join(_JOURNAL_COLUMNS)}) SELECT "
        + ", ".join(_cast(j, column, "j_" + column) for column in _JOURNAL_COLUMNS)
        + " FROM u)"
    )
    if rows:
        values = ", ".join(
            "(" + ", ".join([str(n), *(_cast(o, c, f"o{n}_{c}") for c in _OUTBOX_COLUMNS)]) + ")"
            for n in range(rows)
        )
        columns = ", ".join(_OUTBOX_COLUMNS)
        # ORDER BY n: the ids, and so the delivery order, follow the order of emission.
        sql += (
            f", o AS (INSERT INTO {o.name} ({columns}) SELECT {columns} FROM u, "  # noqa: S608
            f"(VALUES {values}) AS v (n, {columns}) ORDER BY n)"
        )
    sql += " SELECT id FROM u"
    binds = [
        bindparam("s_" + c, type_=_NULLABLE_JSON if c == "timeouts" else s.c[c].type)
        for c in _SAGA_COLUMNS
    ]
    binds += [bindparam("j_" + c, type_=j.c[c].type) for c in _JOURNAL_COLUMNS]
    binds += [
        bindparam(f"o{n}_{c}", type_=o.c[c].type) for n in range(rows) for c in _OUTBOX_COLUMNS
    ]
    # Sent through the DBAPI cursor (`outbox.prebuilt`): once for every unbatched step.
    statement = _STATEMENTS[rows] = Prebuilt(text(sql).bindparams(*binds))
    return statement


def supported(executor: Executor) -> bool:
    """Whether this database runs the one-statement step (PostgreSQL)."""
    return dialect_of(executor) == "postgresql"


def save_step(
    executor: Executor,
    columns: Mapping[str, Any],
    *,
    saga_id: Any,
    expected_version: int,
    journal_line: Mapping[str, Any],
    outbox_rows: Sequence[Mapping[str, Any]],
) -> bool:
    """Update the saga row to `columns` if it still has `expected_version`, and only then
    insert `journal_line` and `outbox_rows`; False (nothing written) if the version was stale."""
    carried, rest = outbox_rows[:MAX_ROWS], outbox_rows[MAX_ROWS:]
    parameters: dict[str, Any] = {"b_id": saga_id, "b_expected_version": expected_version}
    parameters.update({"s_" + c: columns[c] for c in _SAGA_COLUMNS})
    parameters.update({"j_" + c: journal_line[c] for c in _JOURNAL_COLUMNS})
    for n, row in enumerate(carried):
        parameters.update({f"o{n}_{c}": row[c] for c in _OUTBOX_COLUMNS})
    saved = _statement(len(carried)).first(executor, parameters) is not None
    if saved:
        write_rows(executor, rest)  # after the statement's rows: their ids follow the emission
    return saved


def _pg_dialect() -> Any:
    from sqlalchemy.dialects.postgresql import psycopg

    # SQLAlchemy leaves the dialect's constructor untyped.
    return psycopg.dialect()  # type: ignore[no-untyped-call]


_PG_DIALECT = _pg_dialect()
