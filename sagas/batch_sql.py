"""A batch's saga statements on PostgreSQL, with one array parameter per column.

A batch of 50 messages read its sagas with 100 parameters (an IN list of keys) and wrote them back
with 50 UPDATEs sent as one batch of parameters: psycopg caches no statement past 50 parameters, so
it parsed the read anew for every batch, and the write-back cost it a dump, a prepare check and a
pipeline step per row, and the server one execution per row. Here each column travels as one
array, zipped back into rows by `unnest` (in step, as PostgreSQL runs several set-returning
functions in one select list), so each statement is short, converted once and prepared, and
runs once. The rows, the locks and their order, and the version check are the plain statements'
(`sagas.store`), which SQLite keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Insert,
    Integer,
    String,
    Table,
    Update,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from outbox.arrays import Array
from outbox.prebuilt import Prebuilt
from sagas.tables import saga_instances

__all__ = ["LOCK_AND_LOAD", "insert_many", "save_many"]


def _array(name: str, type_: TypeEngine[Any]) -> Any:
    """`unnest(:name)` of an array of `type_`, its values processed by the column's own type."""
    return func.unnest(bindparam(name, type_=Array(type_)))


def _element_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """The array's element type for a column: its own, but text without a length (a cast to
    VARCHAR(255) would cut a longer value, which the column itself refuses) and JSON as JSONB
    (the column's PostgreSQL variant)."""
    if isinstance(type_, String):
        return String()
    if isinstance(type_, JSON):
        return JSONB()
    return type_


# The rows of the keys (saga type, correlation id), locked in the order of the plain statement's:
# batches sharing sagas cannot deadlock on them.
LOCK_AND_LOAD = Prebuilt(
    select(saga_instances)
    .where(
        tuple_(saga_instances.c.saga_type, saga_instances.c.correlation_id).in_(
            select(_array("b_types", String()), _array("b_ids", String()))
        )
    )
    .order_by(saga_instances.c.saga_type, saga_instances.c.correlation_id)
    .with_for_update()
)

_SAVES: dict[tuple[str, ...], Prebuilt] = {}


def _save_many(names: tuple[str, ...]) -> Update:
    """UPDATE the sagas FROM the unnested arrays: each row's columns `names`, where its id is
    `b_id` and its version still `b_expected_version` (the row count tells how many were)."""
    rows = select(
        _array("b_id", Uuid()).label("b_id"),
        _array("b_expected_version", Integer()).label("b_expected_version"),
        *(_array(name, _element_type(saga_instances.c[name].type)).label(name) for name in names),
    ).subquery("saved")
    return (
        update(saga_instances)
        .where(
            saga_instances.c.id == rows.c.b_id,
            saga_instances.c.version == rows.c.b_expected_version,
        )
        .values({name: rows.c[name] for name in names})
    )


def save_many(rows: Sequence[dict[str, Any]]) -> tuple[Prebuilt, dict[str, list[Any]]]:
    """The statement and its parameters that write `rows` (each the saga's columns, `b_id` and
    `b_expected_version`, one row per saga); built once per set of columns."""
    names = tuple(name for name in rows[0] if name not in ("b_id", "b_expected_version"))
    statement = _SAVES.get(names)
    if statement is None:
        statement = _SAVES[names] = Prebuilt(_save_many(names))
    parameters = {name: [row[name] for row in rows] for name in rows[0]}
    return statement, parameters


_INSERTS: dict[tuple[str, tuple[str, ...]], Prebuilt] = {}


def _insert_many(table: Table, names: tuple[str, ...]) -> Insert:
    """INSERT the rows of the unnested arrays `names`, ordered by their place in the arrays:
    the ids a sequence gives them (the journal's, the outbox's delivery order) follow the
    rows' order, as SQLAlchemy's own ordered multi-row INSERT relies on PostgreSQL to do."""
    arrays = [bindparam(name, type_=Array(_element_type(table.c[name].type))) for name in names]
    rows = (
        func.unnest(*arrays)
        .table_valued(*names, with_ordinality="sagabox_place")
        .render_derived()
        .alias("inserted")
    )
    ordered = select(*(rows.c[name] for name in names)).order_by(rows.c.sagabox_place)
    return insert(table).from_select(list(names), ordered)


def insert_many(
    table: Table, rows: Sequence[dict[str, Any]]
) -> tuple[Prebuilt, dict[str, list[Any]]] | None:
    """The statement and its parameters that insert `rows` into `table`, in their order; None
    when the rows do not all have the same columns (the caller sends them as they are)."""
    names = tuple(rows[0])
    if any(row.keys() != rows[0].keys() for row in rows):
        return None
    statement = _INSERTS.get((table.name, names))
    if statement is None:
        statement = _INSERTS[(table.name, names)] = Prebuilt(_insert_many(table, names))
    return statement, {name: [row[name] for row in rows] for name in names}
