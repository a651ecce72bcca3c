"""Saga rows in SQL: load, create (race-safe) and update (version-checked); their journal lines
are `sagas.journal`'s."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import uuid5

from sqlalchemy import (
    Insert,
    Select,
    Table,
    bindparam,
    cast,
    insert,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from outbox import clock, signals
from outbox.database import INSERTS_IGNORING_CONFLICTS, Executor, dialect_of
from outbox.sync_only import refuse_async
from outbox.tables import outbox_messages
from outbox.writer import write_rows
from sagas import batch_sql, correlation, evolution, step_sql
from sagas.batch import Key, SagaBatch, attach, current_batch
from sagas.definition import Saga
from sagas.errors import ConcurrencyConflict, SagaDefinitionError
from sagas.journal import JOURNAL_INSERT, write_journal_line
from sagas.retention import prune_finished as prune_finished  # its home until 2026-12
from sagas.storable import check_data
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import PendingTimeout, next_due

S = TypeVar("S", bound=Saga[Any])


# Built once: the worker runs these for every message, and building a statement (and its cache
# key) each time cost more than the round trip to the database (profiled in bench/).
_LOAD = select(saga_instances).where(
    saga_instances.c.saga_type == bindparam("b_saga_type"),
    saga_instances.c.correlation_id == bindparam("b_correlation_id"),
)
# In a batch, rows are locked as they are read: the batch's writes wait for its commit.
_LOAD_LOCKED = _LOAD.with_for_update()
_LOCK_AND_LOAD = (
    select(saga_instances)
    .where(
        tuple_(saga_instances.c.saga_type, saga_instances.c.correlation_id).in_(
            bindparam("b_keys", expanding=True)
        )
    )
    # PostgreSQL locks the rows in this order: batches sharing sagas cannot deadlock on them.
    .order_by(saga_instances.c.saga_type, saga_instances.c.correlation_id)
    .with_for_update()
)
# Many rows at once (a batch's write-back): UPDATE ... RETURNING cannot be sent as one batch of
# parameters, so the row count checks the versions there.
_SAVE_MANY = update(saga_instances).where(
    saga_instances.c.id == bindparam("b_id"),
    saga_instances.c.version == bindparam("b_expected_version"),
)
_SAVE = _SAVE_MANY.returning(saga_instances.c.id)


def load(executor: Executor, saga_type: type[S], correlation_id: str) -> S | None:
    """The saga instance of `saga_type` for `correlation_id`, finished or not, or None."""
    refuse_async(executor, "store.load", "await app.aio.load(session, SagaType, id)")
    if not correlation.storable(correlation_id):
        return None  # no saga has it: SQLite would find none, PostgreSQL refuse the query
    batch = current_batch(executor)
    if batch is not None:
        return _load_in_batch(executor, batch, saga_type, correlation_id)
    row = (
        executor.execute(
            _LOAD, {"b_saga_type": saga_type.saga_type, "b_correlation_id": correlation_id}
        )
        .mappings()
        .first()
    )
    return None if row is None else _instance(saga_type, row)


def lock_and_load(session: Session, keys: list[Key]) -> SagaBatch:
    """Start a batch in `session`'s transaction: lock and read the saga rows `keys` (saga
    type, correlation id) in one statement, and defer this transaction's saga updates and
    journal lines to one statement each, run just before it commits."""
    batch = SagaBatch()
    wanted = sorted(set(keys))
    if wanted:
        if dialect_of(session) == "postgresql":
            # The keys as two arrays, on the DBAPI cursor (`outbox.prebuilt`).
            rows: Any = batch_sql.LOCK_AND_LOAD.dicts(
                session,
                {"b_types": [key[0] for key in wanted], "b_ids": [key[1] for key in wanted]},
            )
        else:
            rows = session.execute(_LOCK_AND_LOAD, {"b_keys": wanted}).mappings()
        for row in rows:
            batch.rows[(row["saga_type"], row["correlation_id"])] = row
    attach(session, batch, _write_back)
    return batch


def _load_in_batch(
    executor: Executor, batch: SagaBatch, saga_type: type[S], correlation_id: str
) -> S | None:
    key = (saga_type.saga_type, correlation_id)
    saga = batch.instances.get(key)
    if saga is None:
        row = batch.rows.pop(key, None)
        if row is None:  # not foreseen by lock_and_load: read it now, locked all the same
            parameters = {"b_saga_type": key[0], "b_correlation_id": correlation_id}
            row = executor.execute(_LOAD_LOCKED, parameters).mappings().first()
            if row is None:
                return None
        saga = batch.instances[key] = _instance(saga_type, row)
    assert isinstance(saga, saga_type)
    return saga


def from_row(saga_type: type[S], row: Any) -> S:
    """The instance a row of `saga_instances` holds (read by a statement of another module,
    such as `sagas.inbox_load`), as `load` would return it."""
    return _instance(saga_type, row)


def _instance(saga_type: type[S], row: Any) -> S:
    """The instance a row holds, as the current definition sees it (see `sagas.evolution`)."""
    data_version = row["data_version"]
    plan = evolution.plan(saga_type, row["definition_version"], data_version, row["state"])
    if plan.problem is not None:
        raise SagaDefinitionError(
            f"{saga_type.saga_type} {row['correlation_id']!r} (id {row['id']}) {plan.describe()}"
        )
    data = row["data"]
    if data_version != saga_type.current_version:
        data = evolution.upcast(saga_type, data, data_version)
    saga = saga_type(
        saga_id=row["id"],
        correlation_id=row["correlation_id"],
        state=plan.to_state,
        definition_version=plan.to_version,
        data=saga_type.data_type.model_validate(data),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        incarnation=row["incarnation"],
        timeouts={
            name: PendingTimeout.from_json(value) for name, value in (row["timeouts"] or {}).items()
        },
    )
    if plan.changes:
        saga.migration = plan
        if saga.state_name in saga_type.final_states and saga.finished_at is None:
            # Mapped into a final state: finished now, or it stays "live" there for good.
            saga.finished_at, saga.timeouts = clock.now(), {}
    return saga


def create(
    executor: Executor, saga: Saga[Any], *, then: Sequence[tuple[Table, dict[str, Any]]] = ()
) -> bool:
    """Insert a new saga row; False if another transaction created the same saga first.

    `then` are rows (its journal line, its outbox messages) written only if the saga row went
    in: on PostgreSQL in the same statement, one round trip instead of one per row, which is
    most of what starting a saga from a request costs; elsewhere one after the other.
    """
    row = {**_columns(saga), "id": saga.id, "incarnation": saga.incarnation}
    row["created_at"] = saga.created_at
    batch = current_batch(executor)
    dialect = dialect_of(executor)
    if dialect == "postgresql" and batch is None and then:
        # A start that sends thousands of messages would pass PostgreSQL's 65,535 parameters
        # in one statement (and cache a statement that size): the rows past the first
        # `step_sql.MAX_ROWS` follow it in one multi-row insert.
        carried, then = then[: step_sql.MAX_ROWS], then[step_sql.MAX_ROWS :]
        parameters = {f"p0_{name}": value for name, value in row.items()}
        for number, (_table, values) in enumerate(carried, start=1):
            parameters.update({f"p{number}_{name}": value for name, value in values.items()})
        shape = tuple((table, tuple(values)) for table, values in carried)
        statement = _create_with(tuple(row), shape)
        created = executor.execute(statement, parameters).first() is not None
        if created and then and all(table is outbox_messages for table, _values in then):
            write_rows(executor, [values for _table, values in then])  # in one go, in order
            return True
    else:
        created = executor.execute(_CREATE[dialect], row).first() is not None
    if created and batch is not None:
        batch.instances[(saga.saga_type, saga.correlation_id)] = saga
        batch.writes += 1
    if created:
        for table, values in then:
            if table is saga_journal:
                write_journal_line(executor, values)
            elif batch is not None and table is outbox_messages:
                batch.outbox.append(values)  # written with the batch's other rows at its commit
            else:
                executor.execute(_insert_into(table), values)
    return created


# Dialect → the create statement, built once (its values are parameters).
_CREATE = {
    dialect: make(saga_instances).returning(saga_instances.c.id)
    for dialect, make in INSERTS_IGNORING_CONFLICTS.items()
}


@functools.cache
def _insert_into(table: Table) -> Insert:
    return insert(table)


@functools.lru_cache(maxsize=64)
def _create_with(
    columns: tuple[str, ...], then: tuple[tuple[Table, tuple[str, ...]], ...]
) -> Select[Any]:
    """PostgreSQL's one statement for `create(..., then=...)`, per shape of the rows: the saga
    row's INSERT ... ON CONFLICT DO NOTHING in a CTE, and each further row inserted from it,
    so none goes in when the saga row did not. Parameters are `p0_<column>` for the saga row,
    `p<n>_<column>` for the n-th further row; each is cast to its column's type."""
    created = (
        pg_insert(saga_instances)
        .values({name: _parameter(saga_instances, 0, name) for name in columns})
        .on_conflict_do_nothing()
        .returning(saga_instances.c.id)
        .cte("created")
    )
    # One INSERT per table and set of columns, its rows in the order given: the sub-statements
    # of a WITH run in no promised order, and the outbox's ids must follow the order in which
    # the saga sent its messages (the relay ships a partition's rows in id order).
    groups: dict[tuple[Table, tuple[str, ...]], list[Select[Any]]] = {}
    for n, (table, names) in enumerate(then, start=1):
        row = select(*(_parameter(table, n, name) for name in names)).select_from(created)
        groups.setdefault((table, names), []).append(row)
    after = [
        insert(table)
        .from_select(list(names), rows[0] if len(rows) == 1 else union_all(*rows))
        .cte(f"then_{number}")
        for number, ((table, names), rows) in enumerate(groups.items(), start=1)
    ]
    return select(created.c.id).add_cte(*after)


def _parameter(table: Table, number: int, name: str) -> Any:
    column = table.c[name]
    # Cast: in INSERT ... SELECT PostgreSQL does not infer a parameter's type from the column.
    return cast(bindparam(f"p{number}_{name}", type_=column.type), column.type)


def save(executor: Executor, saga: Saga[Any], *, expected_version: int) -> bool:
    """Write a loaded saga back; False if its row changed since it was loaded (stale version).

    In a batch the write waits for the commit, and a stale version fails the commit instead.
    """
    batch = current_batch(executor)
    if batch is not None:
        _journal_migration(executor, saga)
        batch.expected.setdefault(saga.id, expected_version)
        batch.changed[saga.id] = saga
        batch.writes += 1
        batch.instances[(saga.saga_type, saga.correlation_id)] = saga
        return True
    parameters = {**_columns(saga), "b_id": saga.id, "b_expected_version": expected_version}
    saved = executor.execute(_SAVE, parameters).first() is not None
    if saved:  # a stale save changed nothing: no migration to journal (`sagas migrate` commits)
        _journal_migration(executor, saga)
    return saved


def _journal_migration(executor: Executor, saga: Saga[Any]) -> None:
    """The first save after loading changed an old row: say so in its journal, once."""
    plan, saga.migration = saga.migration, None
    if plan is None:
        return
    line = {
        "saga_id": saga.id,
        "saga_type": saga.saga_type,
        "correlation_id": saga.correlation_id,
        "incarnation": saga.incarnation,
        "version": saga.version,
        "definition_version": plan.to_version,
        "from_state": plan.from_state,
        "to_state": plan.to_state,
        # The code's version: a row that keeps its old path still changed definitions.
        "trigger": f"{evolution.MIGRATE_TRIGGER} v{plan.from_version}->v{plan.current_version}",
        "message_id": uuid5(saga.incarnation, f"migrate {saga.version} {plan}"),
        "outcome": "migrated",
        "at": clock.now(),
    }
    write_journal_line(executor, line)


def _write_back(session: Session, batch: SagaBatch) -> None:
    """A batch's deferred writes: every changed saga in one statement, then its journal, then
    the messages its sagas emitted (on PostgreSQL each one statement of arrays: `batch_sql`)."""
    arrays = dialect_of(session) == "postgresql"
    if batch.changed:
        rows = [
            {**_columns(saga), "b_id": saga_id, "b_expected_version": batch.expected[saga_id]}
            for saga_id, saga in batch.changed.items()
        ]
        if arrays:
            statement, parameters = batch_sql.save_many(rows)
            updated = statement.count(session, parameters)
        else:
            updated = session.connection().execute(_SAVE_MANY, rows).rowcount
        if updated != len(rows):
            raise ConcurrencyConflict(
                f"{len(rows) - updated} of the {len(rows)} sagas this batch changed were "
                "changed by another transaction meanwhile; retry the messages"
            )
    if batch.journal:
        _insert(session, saga_journal, JOURNAL_INSERT, batch.journal, arrays=arrays)
    if batch.outbox:
        _insert(session, outbox_messages, None, batch.outbox, arrays=arrays)


def _insert(
    session: Session,
    table: Table,
    statement: Insert | None,
    rows: list[dict[str, Any]],
    *,
    arrays: bool,
) -> None:
    """Insert a batch's rows, in order: as one statement of arrays where it can, else as a
    batch of parameters (`statement`; None: the outbox writer's own)."""
    many = batch_sql.insert_many(table, rows) if arrays and len(rows) > 1 else None
    if many is not None:
        many[0].rows(session, many[1])
        if table is outbox_messages:
            signals.mark_written(session)  # what `write_rows` does after its insert
    elif statement is not None:
        session.execute(statement, rows)
    else:
        write_rows(session, rows)


def saves_step_at_once(executor: Executor, saga: Saga[Any]) -> bool:
    """Whether `save_step` applies: PostgreSQL, outside a batch (whose writes wait for its
    commit), for a row whose first save after an upgrade needs no migration line."""
    return (
        saga.migration is None and current_batch(executor) is None and step_sql.supported(executor)
    )


def save_step(
    executor: Executor,
    saga: Saga[Any],
    *,
    expected_version: int,
    line: dict[str, Any],
    outbox_rows: list[dict[str, Any]],
) -> bool:
    """`save`, the journal `line` and the `outbox_rows` (from `Outbox(..., into=...)`) in one
    statement; False, with nothing written, if the row changed since it was loaded."""
    columns = _columns(saga)
    if not saga.timeouts:
        columns["timeouts"] = None  # SQL NULL there too (see `_columns`)
    saved = step_sql.save_step(
        executor,
        columns,
        saga_id=saga.id,
        expected_version=expected_version,
        journal_line=line,
        outbox_rows=outbox_rows,
    )
    if saved and outbox_rows:
        signals.mark_written(executor)
    return saved


def _columns(saga: Saga[Any]) -> dict[str, Any]:
    data = saga.data.model_dump(mode="json")
    check_data(saga.saga_type, saga.correlation_id, data)
    return {
        "saga_type": saga.saga_type,
        "correlation_id": saga.correlation_id,
        "state": saga.state_name,
        "data": data,
        "version": saga.version,
        "definition_version": saga.definition_version,
        # Loading upcast the data: it is stored in the current shape.
        "data_version": saga.current_version,
        "updated_at": saga.updated_at,
        "finished_at": saga.finished_at,
        # SQL NULL, not JSON null, when nothing is pending: "stuck" queries test for it.
        "timeouts": {name: pending.to_json() for name, pending in saga.timeouts.items()} or null(),
        "next_timeout_at": next_due(saga.timeouts),
    }
