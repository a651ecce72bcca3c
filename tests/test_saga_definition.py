"""Saga classes: one machine per class, diagrams, design checks, and declaration errors."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from decimal import Decimal

import pytest
from pydantic import BaseModel
from transitions import Machine

from outbox import clock
from sagas import Saga, SagaContext, SagaDefinitionError, on
from tests.saga_fixtures import (
    CreditChecked,
    LoanData,
    LoanRequested,
    LoanSaga,
    OfferAccepted,
)

#: Enough instances that a per-instance machine would dwarf the shared one in memory.
INSTANCES = 2_000


def _new_loan(n: int) -> LoanSaga:
    now = clock.now()
    return LoanSaga(
        correlation_id=f"L-{n}",
        state="new",
        data=LoanData(),
        version=0,
        created_at=now,
        updated_at=now,
    )


def _drive(saga: LoanSaga) -> None:
    request = LoanRequested(loan_id=saga.correlation_id, amount=Decimal(100))
    saga.fire(SagaContext(saga, request), request)
    check = CreditChecked(loan_id=saga.correlation_id, ok=True)
    saga.fire(SagaContext(saga, check), check)


def test_thousands_of_instances_share_one_machine_that_keeps_none_of_them() -> None:
    """Thousands of sagas driven through the class's one machine: the machine holds no instance,
    each instance costs a small fraction of what a machine of its own would, and dropped
    instances are freed."""
    machine = LoanSaga.machine
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        own_machine = Machine(
            model=None, states=LoanSaga.states, transitions=[], auto_transitions=False
        )
        machine_cost = sum(
            s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")
        )
        del own_machine

        gc.collect()
        before = tracemalloc.take_snapshot()
        sagas = [_new_loan(n) for n in range(INSTANCES)]
        for saga in sagas:
            _drive(saga)
        gc.collect()
        per_instance = (
            sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
            / INSTANCES
        )
    finally:
        tracemalloc.stop()

    assert machine is LoanSaga.machine
    assert [] == machine.models
    assert {"offered"} == {saga.state_name for saga in sagas}
    assert per_instance < machine_cost / 5, (per_instance, machine_cost)
    last = weakref.ref(sagas[-1])
    del sagas, saga
    gc.collect()
    assert last() is None


def test_mermaid_diagram_of_the_loan_saga() -> None:
    """The diagram shows the start, every transition labelled by message and guards (so the two
    arrows for one message are told apart), and the final states; a path highlights the states
    one instance went through."""
    expected = """stateDiagram-v2
    [*] --> new
    new --> checking: sagatest.LoanRequested
    checking --> offered: sagatest.CreditChecked [credit_ok]
    checking --> denied: sagatest.CreditChecked [not credit_ok]
    offered --> accepted: sagatest.OfferAccepted
    accepted --> [*]
    denied --> [*]
"""
    assert expected == LoanSaga.mermaid()
    highlighted = LoanSaga.mermaid(path=["new", "checking", "offered"])
    assert highlighted.endswith("    class new,checking,offered visited\n")


def test_a_sound_saga_has_no_findings() -> None:
    assert [] == LoanSaga.check()


class BrokenData(BaseModel):
    n: int = 0


class Broken(Saga[BrokenData], name="sagatest.Broken"):
    """Deliberately wrong: an island state, a dead end, a final state with an exit, a message
    nothing uses, and a convention-named callback nothing calls."""

    states = ["new", "waiting", "stuck", "island", {"name": "done", "final": True}]
    transitions = [
        on(LoanRequested, "new", "waiting"),
        on(CreditChecked, "waiting", "stuck"),
        on(CreditChecked, "waiting", "done"),
        on(LoanRequested, "done", "waiting"),
    ]
    correlation = {LoanRequested: "loan_id", CreditChecked: "loan_id"}
    ignore = {OfferAccepted: ["waiting"]}

    def on_enter_stuck(self, ctx: SagaContext, message: CreditChecked) -> None:
        self.data.n += 1


def test_check_reports_what_is_wrong_with_a_broken_saga() -> None:
    """check() finds each deliberate slip, and says how to fix the callback one."""
    assert [
        "dead end: 'stuck' is not final and no transition leaves it",
        "unreachable state: 'island' cannot be reached",
        "final state with exits: 'done' is final, so its exits never run",
        "unused message: sagatest.OfferAccepted starts no transition",
        "callback never called: on_enter_stuck: name it in the state, e.g. "
        '{"name": "...", "on_enter": "on_enter_stuck"}',
    ] == [str(finding) for finding in Broken.check()]


def test_data_fields_need_defaults() -> None:
    """A new saga starts from Data(), so a required field is a definition error."""

    class Strict(BaseModel):
        must: int

    with pytest.raises(SagaDefinitionError, match="every field of Strict needs a default"):

        class Bad(Saga[Strict]):
            states = ["new"]


def test_trigger_must_be_a_message_class() -> None:
    with pytest.raises(SagaDefinitionError, match="trigger must be a message class"):

        class Bad(Saga[BrokenData]):
            states = ["new", "done"]
            transitions = [{"trigger": "go", "source": "new", "dest": "done"}]


def test_correlation_field_must_exist() -> None:
    with pytest.raises(SagaDefinitionError, match="OfferAccepted has no field 'order_id'"):

        class Bad(Saga[BrokenData]):
            states = ["new", "done"]
            transitions = [on(OfferAccepted, "new", "done")]
            correlation = {OfferAccepted: "order_id"}


def test_undeclared_state_is_a_definition_error() -> None:
    with pytest.raises(
        SagaDefinitionError, match=r"OfferAccepted names undeclared states \['nowhere'\]"
    ):

        class Bad(Saga[BrokenData]):
            states = ["new"]
            transitions = [on(OfferAccepted, "new", "nowhere")]


def test_data_type_must_be_named() -> None:
    with pytest.raises(SagaDefinitionError, match=r"Saga\[MyData\]"):

        class Bad(Saga):  # type: ignore[type-arg]
            states = ["new"]


def test_custom_finder_receives_the_message() -> None:
    """A correlation function finds the instance when no single field does."""

    class Finder(Saga[BrokenData]):
        states = ["new", {"name": "done", "final": True}]
        transitions = [on(OfferAccepted, "new", "done")]
        correlation = {OfferAccepted: lambda message: f"offer-{message.loan_id}"}

    assert "offer-7" == Finder.correlate(OfferAccepted(loan_id="7"))
