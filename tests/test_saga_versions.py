"""Saga definitions evolving with instances in flight: v1 orders in every state, v2 deployed with
an inserted step, a renamed state, a removed state and a renamed data field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from examples.order.messages import (
    ChargePayment,
    InventoryReserved,
    OrderPlaced,
    OrderScreened,
    OutOfStock,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReserveInventory,
    ScreenOrder,
)
from examples.order.saga import OrderSaga
from examples.order.saga_v2 import OrderDataV2, OrderSagaV2
from outbox import HandlerContext, Message, MessageRegistry, handles
from sagabox import App
from sagabox.cli import main
from sagabox.testing import SagaHarness
from sagas import Saga, SagaDefinitionError, on
from sagas.evolution import OLD_PATH, plan, upcast

README = Path(__file__).parent.parent / "README.md"

LIVE = ("O-charging", "O-reserving", "O-refunding")


class OrderSagaV2Moving(OrderSagaV2, name="orders.Order"):
    """v2 with the other policy: v1 orders still charging move to the v2 path (screening)."""

    on_old_version = "migrate_at"
    migrate_at = ("charging",)


class Careless(Saga[OrderDataV2], name="orders.Order"):
    """A v2 that forgot the v1 states `reserving` and `refunding` and maps neither."""

    version = 2
    states = ["new", "charging", "allocating", {"name": "done", "final": True}]
    transitions = [
        on(OrderPlaced, "new", "charging"),
        on(PaymentCharged, "charging", "allocating"),
        on(InventoryReserved, "allocating", "done"),
    ]
    correlation = {m: "order_id" for m in (OrderPlaced, PaymentCharged, InventoryReserved)}


@Careless.data_upcaster(from_version=1)
def _careless_data(data: dict[str, Any]) -> dict[str, Any]:
    # Its data is upcast as v2's is: only its states are careless.
    data["charges_sent"] = data.pop("charge_attempts", 0)
    return data


@handles(ChargePayment, RefundPayment)
def payments_inbox(ctx: HandlerContext, command: ChargePayment | RefundPayment) -> None:
    """Takes the command; the test answers for the payment service."""


@handles(ReserveInventory)
def inventory_inbox(ctx: HandlerContext, command: ReserveInventory) -> None:
    """Takes the command; the test answers for the inventory."""


@handles(ScreenOrder)
def risk_inbox(ctx: HandlerContext, command: ScreenOrder) -> None:
    """Takes the command; the test answers for the risk service."""


def system(saga: type[Saga[Any]]) -> list[App]:
    """The orders endpoint running `saga`, and services that take commands and stay silent."""
    return [
        App("orders", sagas=[saga], inputs=[OrderPlaced]),
        App("payments", handlers=[payments_inbox]),
        App("inventory", handlers=[inventory_inbox]),
        App("risk", handlers=[risk_inbox]),
    ]


def v2_apps() -> list[App]:
    return system(OrderSagaV2)


def careless_apps() -> list[App]:
    return system(Careless)


def _placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id, customer="Ada", sku="lamp", quantity=1, amount=Decimal(40)
    )


@pytest.fixture
def v1(database_url: str) -> Iterator[SagaHarness]:
    """v1 orders in every state: charging, reserving, refunding, completed and cancelled."""
    with SagaHarness(*system(OrderSaga), database=database_url) as h:
        answers: dict[str, list[Any]] = {
            "O-charging": [],
            "O-reserving": [PaymentCharged],
            "O-refunding": [PaymentCharged, OutOfStock],
            "O-completed": [PaymentCharged, InventoryReserved],
            "O-cancelled": [PaymentDeclined],
        }
        for order_id, messages in answers.items():
            h.dispatch(_placed(order_id))
            for message in messages:
                h.dispatch(message(order_id=order_id))
        states = {order_id: h.state(OrderSaga, order_id) for order_id in answers}
        assert {order_id: order_id[2:] for order_id in answers} == states
        yield h


def _saga(h: SagaHarness, saga: type[Saga[Any]], order_id: str) -> Saga[Any]:
    found = h.saga(saga, order_id)
    assert found is not None
    return found


def _migrations(h: SagaHarness, order_id: str) -> list[tuple[str, str, int, str]]:
    return [
        (line["from_state"], line["to_state"], line["definition_version"], line["trigger"])
        for line in h.journal(OrderSaga, order_id)
        if line["outcome"] == "migrated"
    ]


def test_old_orders_finish_on_the_path_they_started(v1: SagaHarness) -> None:
    """finish_old_path: v1 orders skip the inserted step and finish through the removed state;
    renamed states and data fields are mapped; new orders take the v2 path."""
    v1.deploy(*v2_apps())
    v1.dispatch(PaymentCharged(order_id="O-charging"))
    charging = _saga(v1, OrderSagaV2, "O-charging")
    assert ("allocating", 1) == (charging.state_name, charging.definition_version)
    assert 1 == charging.data.charges_sent  # was charge_attempts in v1
    assert "allocating" == _saga(v1, OrderSagaV2, "O-reserving").state_name  # renamed on load
    v1.dispatch(PaymentRefunded(order_id="O-refunding"))
    v1.dispatch(*(InventoryReserved(order_id=o) for o in ("O-charging", "O-reserving")))
    v1.dispatch(PaymentCharged(order_id="O-completed"))  # late: the tombstone loads fine

    v1.dispatch(_placed("O-new"), PaymentCharged(order_id="O-new"))
    assert "screening" == v1.state(OrderSagaV2, "O-new")
    v1.dispatch(OrderScreened(order_id="O-new"))
    v1.dispatch(OutOfStock(order_id="O-new"))
    new = _saga(v1, OrderSagaV2, "O-new")
    assert ("cancelled", 2) == (new.state_name, new.definition_version)

    ends = {o: v1.state(OrderSagaV2, o) for o in (*LIVE, "O-completed", "O-cancelled")}
    assert {
        "O-charging": "completed",
        "O-reserving": "completed",
        "O-refunding": "cancelled",
        "O-completed": "completed",
        "O-cancelled": "cancelled",
    } == ends
    assert [("charging", "charging", 1, "sagabox.migrate v1->v2")] == _migrations(v1, "O-charging")
    assert [("reserving", "allocating", 1, "sagabox.migrate v1->v2")] == _migrations(
        v1, "O-reserving"
    )
    assert [("refunding", "refunding", 1, "sagabox.migrate v1->v2")] == _migrations(
        v1, "O-refunding"
    )
    assert [] == _migrations(v1, "O-new")
    path = [(line["from_state"], line["to_state"]) for line in v1.journal(OrderSaga, "O-charging")]
    assert ("charging", "allocating") in path
    assert ("charging", "screening") not in path


def test_old_orders_move_to_the_new_path_at_the_declared_point(v1: SagaHarness) -> None:
    """migrate_at: v1 orders in `charging` switch to v2 there and get screened; the ones past it
    finish on the v1 path."""
    v1.deploy(*system(OrderSagaV2Moving))
    v1.dispatch(PaymentCharged(order_id="O-charging"))
    moved = _saga(v1, OrderSagaV2Moving, "O-charging")
    assert ("screening", 2) == (moved.state_name, moved.definition_version)
    assert [("charging", "charging", 2, "sagabox.migrate v1->v2")] == _migrations(v1, "O-charging")
    v1.dispatch(OutOfStock(order_id="O-reserving"))  # v1 path: refund first, then cancel
    assert "refunding" == v1.state(OrderSagaV2Moving, "O-reserving")
    v1.dispatch(PaymentRefunded(order_id="O-reserving"), PaymentRefunded(order_id="O-refunding"))
    assert ["cancelled", "cancelled"] == [
        v1.state(OrderSagaV2Moving, o) for o in ("O-reserving", "O-refunding")
    ]


def test_migrate_dry_run_reports_exactly_what_migrate_then_does(
    v1: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagas migrate --dry-run` lists the live v1 instances and what they become; the real run
    migrates exactly those, journaled, and a second run finds nothing left."""
    spec = f"{__name__}:v2_apps"
    capsys.readouterr()
    assert 0 == main(["sagas", "migrate", "--app", spec, "--db", v1.database, "--dry-run"])
    human = capsys.readouterr().out
    assert "orders.Order v1 reserving: 1 → v1 allocating (finishes on the v1 path)" in human
    assert "would migrate 3, 0 cannot be migrated" in human
    args = ["sagas", "migrate", "--app", spec, "--db", v1.database, "--json"]
    assert 0 == main([*args, "--dry-run"])
    planned = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(LIVE) == [p["correlation_id"] for p in planned]
    assert 0 == main([*args, "--batch-size", "2"])
    done = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert planned == done
    assert 0 == main([*args, "--dry-run"])
    assert "" == capsys.readouterr().out

    v1.deploy(*v2_apps())
    assert "allocating" == v1.state(OrderSagaV2, "O-reserving")
    v1.dispatch(InventoryReserved(order_id="O-reserving"))
    assert "completed" == v1.state(OrderSagaV2, "O-reserving")
    assert [("reserving", "allocating", 1, "sagabox.migrate v1->v2")] == _migrations(
        v1, "O-reserving"
    )
    assert 0 == main(["sagas", "list", "--db", v1.database, "--json", "--type", "orders.Order"])
    versions = {
        row["correlation_id"]: row["definition_version"]
        for row in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert {"O-charging": 1, "O-reserving": 1, "O-refunding": 1} == {o: versions[o] for o in LIVE}
    assert 0 == main(["sagas", "show", "orders.Order", "O-reserving", "--db", v1.database])
    shown = capsys.readouterr().out
    assert "definition: v1" in shown
    assert "sagabox.migrate v1->v2" in shown


def test_a_definition_dropping_occupied_states_is_refused(
    v1: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` with the occupied states, `graph --check --db` and `sagas migrate` refuse a v2
    that drops states live v1 instances are in; loading such an instance says what to map."""
    occupied = [(1, "charging"), (1, "reserving"), (1, "refunding")]
    found = [str(f) for f in Careless.check(occupied) if f.kind == "occupied state dropped"]
    assert 2 == len(found)
    assert "'reserving'" in found[1]
    assert "renamed" in found[1]
    assert [] == [f for f in OrderSagaV2.check(occupied) if f.kind == "occupied state dropped"]

    capsys.readouterr()
    careless = f"{__name__}:careless_apps"
    assert 1 == main(["graph", "--check", "--app", careless, "--db", v1.database])
    assert 2 == capsys.readouterr().out.count("error: occupied state dropped")
    example = "examples.order.apps:apps_v2"
    assert 0 == main(["graph", "--check", "--app", example, "--db", v1.database])
    assert "occupied state dropped" not in capsys.readouterr().out
    assert 1 == main(["sagas", "migrate", "--app", careless, "--db", v1.database])
    assert "migrated 1, 2 cannot be migrated" in capsys.readouterr().out

    v1.deploy(*careless_apps())
    with pytest.raises(SagaDefinitionError, match="has no state 'refunding'"):
        v1.saga(Careless, "O-refunding")


def test_declarations_are_checked_when_the_class_is_defined() -> None:
    """Maps to undeclared states, versions that are not older, and a new-path transition
    through a state kept for old instances fail at import, saying what to fix."""

    class Data(BaseModel):
        n: int = 0

    with pytest.raises(SagaDefinitionError, match="not declared"):

        class BadMap(Saga[Data]):
            version = 2
            states = ["a", "b"]
            renamed = {"old": "nowhere"}

    with pytest.raises(SagaDefinitionError, match="older versions"):

        class BadVersions(Saga[Data]):
            version = 2
            states = ["a", "b"]
            transitions = [on(OrderPlaced, "a", "b", versions=(2,))]

    with pytest.raises(SagaDefinitionError, match="mark it with versions"):

        class Unmarked(Saga[Data]):
            version = 2
            states = ["a", "b"]
            removed = {"gone": OLD_PATH}
            transitions = [on(OrderPlaced, "gone", "b")]

    with pytest.raises(SagaDefinitionError, match="older version"):
        OrderSagaV2.data_upcaster(from_version=2)(lambda data: data)


def test_the_readme_example_defines_a_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's v2 saga builds as printed, and maps a stored v1 row as it says."""
    monkeypatch.setattr(Message, "registry", MessageRegistry())
    section = README.read_text().split("## Changing a saga while instances run\n", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102 - our own README
    review = namespace["ReviewSaga"]
    assert "reviewing" == plan(review, 1, 1, "in_review").to_state
    assert 1 == plan(review, 1, 1, "escalated").to_version
    assert {"assigned_to": "Bo"} == upcast(review, {"reviewer": "Bo"}, 1)
    assert [] == review.check()


def test_upcasters_chain_and_maps_cover_every_way_a_state_goes() -> None:
    """v1 data reaches v3 through both upcasters; a removed state maps to an existing one; a
    row written by a newer version is refused rather than misread."""

    class Data(BaseModel):
        total_cents: int = 0

    class Loan(Saga[Data], name="tests.VersionedLoan"):
        version = 3
        states = ["new", "reviewing", {"name": "done", "final": True}]
        renamed = {"in_review": "reviewing"}
        removed = {"escalated": "reviewing"}
        transitions = [on(OrderPlaced, "new", "reviewing")]

    @Loan.data_upcaster(from_version=1)
    def _renamed(data: dict[str, Any]) -> dict[str, Any]:
        return {"total": data.pop("amount")}

    @Loan.data_upcaster(from_version=2)
    def _cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"total_cents": round(data["total"] * 100)}

    assert {"total_cents": 1250} == upcast(Loan, {"amount": 12.5}, 1)
    assert {"total_cents": 300} == upcast(Loan, {"total": 3}, 2)
    moved = plan(Loan, 1, 1, "escalated")
    assert ("reviewing", 3, True) == (moved.to_state, moved.to_version, moved.changes)
    assert "reviewing" == plan(Loan, 2, 2, "in_review").to_state
    assert not plan(Loan, 3, 3, "reviewing").changes
    newer = plan(Loan, 4, 4, "reviewing").problem
    assert newer is not None
    assert "run the newer code" in newer
