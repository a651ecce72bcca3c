"""Moving stored saga instances to the current definition in batches (`sagabox sagas migrate`).

Loading an instance already applies `sagas.evolution.plan` to it; this module applies the same
plan to every live instance ahead of time, a batch per transaction, so a deploy can be checked
(`occupied`, the dry run) and old rows stop depending on the maps and upcasters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, bindparam, func, or_, select

from outbox.database import Executor
from outbox.sync_only import refuse_async_call
from sagas import store
from sagas.definition import Saga
from sagas.errors import SagaDefinitionError
from sagas.evolution import Plan, plan, upcast
from sagas.tables import saga_instances


@dataclass(frozen=True)
class InstancePlan:
    """What migrating does (or would do) to one live instance."""

    saga_type: str
    correlation_id: str
    plan: Plan

    def to_json(self) -> dict[str, Any]:
        return {
            "saga_type": self.saga_type,
            "correlation_id": self.correlation_id,
            "from_version": self.plan.from_version,
            "from_state": self.plan.from_state,
            "data_version": self.plan.data_version,
            "to_version": self.plan.to_version,
            "to_state": self.plan.to_state,
            "problem": self.plan.problem,
        }


def occupied(executor: Executor, saga_type: type[Saga[Any]]) -> dict[tuple[int, str], int]:
    """How many live (unfinished) instances of `saga_type` there are per (version, state)."""
    refuse_async_call(executor, "occupied")
    c = saga_instances.c
    rows = executor.execute(
        select(c.definition_version, c.state, func.count())
        .where(c.saga_type == saga_type.saga_type, c.finished_at.is_(None))
        .group_by(c.definition_version, c.state)
    )
    return {(version, state): count for version, state, count in rows}


def _candidates(saga_type: type[Saga[Any]]) -> Select[Any]:
    # Rows the current definition may change: older versions, or a state a map names.
    c = saga_instances.c
    return (
        select(c.correlation_id, c.definition_version, c.data_version, c.state, c.data)
        .where(
            c.saga_type == saga_type.saga_type,
            c.finished_at.is_(None),
            or_(
                c.definition_version < bindparam("b_current"),
                c.data_version < bindparam("b_current"),
                c.state.in_(bindparam("b_mapped", expanding=True)),
            ),
        )
        .order_by(c.correlation_id)
    )


def plans(executor: Executor, saga_type: type[Saga[Any]]) -> list[InstancePlan]:
    """The live instances of `saga_type` the current definition changes or cannot load, in
    correlation id order, each with its plan: exactly what `migrate_all` would go through."""
    refuse_async_call(executor, "plans")
    found: list[InstancePlan] = []
    after: str | None = ""
    while after is not None:
        batch, after = _scan(executor, saga_type, after, 1000)
        found.extend(batch)
    return found


def _scan(
    executor: Executor, saga_type: type[Saga[Any]], after: str, limit: int
) -> tuple[list[InstancePlan], str | None]:
    query = (
        _candidates(saga_type)
        .where(saga_instances.c.correlation_id > bindparam("b_after"))
        .limit(limit)
    )
    parameters = {
        "b_current": saga_type.current_version,
        "b_mapped": sorted({*saga_type.renamed, *saga_type.removed}) or [""],
        "b_after": after,
    }
    rows = executor.execute(query, parameters).all()
    found = []
    for correlation_id, version, data_version, state, data in rows:
        planned = plan(saga_type, version, data_version, state)
        if planned.problem is None and data_version != saga_type.current_version:
            planned = _check_data(saga_type, planned, data)
        if planned.changes or planned.problem is not None:
            found.append(InstancePlan(saga_type.saga_type, correlation_id, planned))
    # Where the next batch starts: after the last row read, changed or not (None: done).
    return found, rows[-1][0] if len(rows) == limit else None


def _check_data(saga_type: type[Saga[Any]], planned: Plan, data: Any) -> Plan:
    # The dry run must refuse what loading would: an upcaster that fails, or data it leaves
    # invalid for the current data model.
    try:
        saga_type.data_type.model_validate(upcast(saga_type, data, planned.data_version))
    except SagaDefinitionError as exc:
        return replace(planned, problem=str(exc))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the data"
        return replace(
            planned,
            problem=f"its upcast data does not fit {saga_type.data_type.__name__} ({where}: "
            f"{error['msg']}): fix {saga_type.__name__}'s data upcasters",
        )
    return planned


def migrate_batch(
    executor: Executor, saga_type: type[Saga[Any]], *, after: str = "", limit: int = 500
) -> tuple[list[InstancePlan], str | None]:
    """Migrate the next `limit` candidates after `after` in the caller's transaction (journaled);
    return what was done or refused, and where the next batch starts (None: no more)."""
    refuse_async_call(executor, "migrate_batch")
    batch, last = _scan(executor, saga_type, after, limit)
    done = []
    for item in batch:
        if item.plan.problem is not None:
            done.append(item)
            continue
        saga = store.load(executor, saga_type, item.correlation_id)
        if saga is None or saga.migration is None:
            continue  # finished or migrated meanwhile
        expected = saga.version
        # A worker that loaded the row before this batch then fails its save and retries.
        saga.version += 1
        if store.save(executor, saga, expected_version=expected):
            done.append(item)
    return done, last


def migrate_all(
    engine: Any, saga_type: type[Saga[Any]], *, batch_size: int = 500
) -> Iterator[InstancePlan]:
    """Migrate every live instance of `saga_type`, one transaction per batch."""
    after: str | None = ""
    while after is not None:
        with engine.begin() as connection:
            done, after = migrate_batch(connection, saga_type, after=after, limit=batch_size)
        yield from done
