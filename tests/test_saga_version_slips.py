"""Saga versions under pressure: a migration that loses a race journals nothing, and maps that
would move the current version's own instances are refused when the class is defined."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import select, update

from examples.order.messages import InventoryReserved, PaymentCharged
from examples.order.saga_v2 import OrderSagaV2
from outbox.database import Executor, make_engine
from sagabox import App
from sagabox.cli import main
from sagabox.testing import SagaHarness
from sagas import OLD_PATH, Saga, SagaDefinitionError, migration, store
from sagas.tables import saga_instances, saga_journal
from tests.test_saga_versions import _migrations, system, v1, v2_apps

__all__ = ["v1"]  # the fixture of v1 orders in every state, shared with test_saga_versions


def test_a_migration_that_loses_a_race_journals_nothing(
    v1: SagaHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sagas migrate` commits its batch even when a worker saved a row between its read and its
    write: that row is left to the worker, and no "migrated" line claims otherwise."""
    v1.deploy(*v2_apps())
    loaded = store.load

    def raced(executor: Executor, saga_type: type[Saga[Any]], correlation_id: str) -> Any:
        saga = loaded(executor, saga_type, correlation_id)
        # A worker's transaction commits its save of this row now.
        executor.execute(
            update(saga_instances)
            .where(saga_instances.c.correlation_id == correlation_id)
            .values(version=saga_instances.c.version + 1)
        )
        return saga

    monkeypatch.setattr(store, "load", raced)
    engine = make_engine(v1.database)
    try:
        assert [] == list(migration.migrate_all(engine, OrderSagaV2))
        with engine.connect() as connection:
            lines = connection.execute(
                select(saga_journal.c.correlation_id).where(saga_journal.c.outcome == "migrated")
            ).all()
            states = {
                row.correlation_id: row.state
                for row in connection.execute(
                    select(saga_instances.c.correlation_id, saga_instances.c.state)
                )
            }
    finally:
        engine.dispose()
    assert [] == lines
    assert "reserving" == states["O-reserving"]
    monkeypatch.undo()
    v1.dispatch(InventoryReserved(order_id="O-reserving"), PaymentCharged(order_id="O-charging"))
    assert [("reserving", "allocating", 1, "sagabox.migrate v1->v2")] == _migrations(
        v1, "O-reserving"
    )


def test_maps_must_name_dropped_states_once() -> None:
    """A renamed or removed state still in `states` would move new instances too (a new order
    in `charging` loaded in `allocating` skips its payment); a state in both maps is ambiguous."""

    class Data(BaseModel):
        n: int = 0

    with pytest.raises(SagaDefinitionError, match="still declared"):

        class StillDeclared(Saga[Data]):
            version = 2
            states = ["a", "b"]
            renamed = {"a": "b"}

    with pytest.raises(SagaDefinitionError, match="both `renamed` and `removed`"):

        class Twice(Saga[Data]):
            version = 2
            states = ["a", "b"]
            renamed = {"old": "a"}
            removed = {"old": "b"}

    class Kept(Saga[Data]):
        version = 2
        states = ["a", "b"]
        removed = {"gone": OLD_PATH, "older": "a"}

    assert "gone" in Kept.legacy_states


@pytest.mark.parametrize("size", ["0", "-1", "many"])
def test_migrate_refuses_a_batch_size_below_one(
    size: str, v1: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--batch-size 0` crashed the scan (an IndexError), and a negative one is a LIMIT that
    PostgreSQL refuses: the command line says what to give instead, before touching anything."""
    spec = f"{v2_apps.__module__}:v2_apps"
    with pytest.raises(SystemExit) as exited:
        main(["sagas", "migrate", "--app", spec, "--db", v1.database, "--batch-size", size])
    assert 2 == exited.value.code
    assert "--batch-size" in capsys.readouterr().err
    assert [] == _migrations(v1, "O-reserving")


class OrderSagaV3(OrderSagaV2, name="orders.Order"):
    """A v3 whose data upcaster leaves `charges_sent` a string the data model refuses."""

    version = 3


@OrderSagaV3.data_upcaster(from_version=2)
def _spoil(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "charges_sent": "many"}


def v3_apps() -> list[App]:
    return system(OrderSagaV3)


def test_the_dry_run_refuses_data_the_upcasters_leave_invalid(
    v1: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run ran no upcaster, so it promised migrations the real run then crashed on;
    now both list the instances whose upcast data does not fit, and change nothing."""
    spec = f"{__name__}:v3_apps"
    capsys.readouterr()
    for dry in (["--dry-run"], []):
        assert 1 == main(["sagas", "migrate", "--app", spec, "--db", v1.database, *dry])
        out = capsys.readouterr().out
        assert " 0, 3 cannot be migrated" in out
        assert "does not fit OrderDataV2 (charges_sent" in out
    assert [] == _migrations(v1, "O-charging")


class OrderSagaV2Cancelling(OrderSagaV2, name="orders.Order"):
    """A v2 that maps the removed `refunding` to the final `cancelled` instead of an old path."""

    removed = {"refunding": "cancelled"}
    ignore = {}
    transitions = [t for t in OrderSagaV2.transitions if "refunding" not in t.values()]


def cancelling_apps() -> list[App]:
    return system(OrderSagaV2Cancelling)


def test_an_instance_mapped_into_a_final_state_is_finished(v1: SagaHarness) -> None:
    """A v1 order refunding, mapped to `cancelled`, used to stay live (unfinished) in a final
    state for good: migrated, it is finished and no longer occupies a state."""
    spec = f"{__name__}:cancelling_apps"
    assert 0 == main(["sagas", "migrate", "--app", spec, "--db", v1.database])
    v1.deploy(*cancelling_apps())
    refunded = v1.saga(OrderSagaV2Cancelling, "O-refunding")
    assert refunded is not None
    assert ("cancelled", True) == (refunded.state_name, refunded.is_finished)
    engine = make_engine(v1.database)
    try:
        with engine.connect() as connection:
            live = migration.occupied(connection, OrderSagaV2Cancelling)
    finally:
        engine.dispose()
    assert {(1, "allocating"): 1, (1, "charging"): 1} == live


class OrderSagaV2Forgetful(OrderSagaV2, name="orders.Order"):
    """v2 with its data model changed (`charge_attempts` became `charges_sent`) but no upcaster."""


OrderSagaV2Forgetful.data_upcasters.clear()


def test_a_data_field_the_new_model_lacks_is_refused_not_lost(v1: SagaHarness) -> None:
    """Without an upcaster the v2 model ignored the stored `charge_attempts`, and the next save
    dropped it for good: loading now refuses, naming the field and the upcaster to write."""
    v1.deploy(*system(OrderSagaV2Forgetful))
    with pytest.raises(SagaDefinitionError, match=r"'charge_attempts'.*data_upcaster"):
        v1.saga(OrderSagaV2Forgetful, "O-charging")
    engine = make_engine(v1.database)
    try:
        with engine.connect() as connection:
            data = connection.execute(
                select(saga_instances.c.data).where(saga_instances.c.correlation_id == "O-charging")
            ).scalar_one()
    finally:
        engine.dispose()
    assert "charge_attempts" in data
