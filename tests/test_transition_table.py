"""A saga's precomputed (trigger, state) table (`sagas.transition_table`) fires transitions as the
`transitions` machine does: same branch, same callbacks in the same order, same state; and what
the table does not model (enter/exit callbacks) still goes through the machine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel
from transitions.core import Event

from outbox import Event as Message
from sagas import Saga, SagaContext, on


class Go(Message, type="table.Go"):
    key: str
    n: int = 0


class Log(BaseModel):
    calls: list[str] = []


class Branches(Saga[Log], name="table.Branches"):
    """Guarded branches (conditions, unless), an internal transition, and every callback kind."""

    states = ["a", "b", "c", {"name": "done", "final": True}]
    transitions = [
        on(Go, "a", "b", conditions="big", prepare="p", before="x", after="y"),
        on(Go, "a", "c", unless="big", before=["x", "x2"], after="y"),
        on(Go, "b", None, conditions="big", after="y"),
        on(Go, "b", "done", unless="big", before="x"),
        on(Go, "c", "done", conditions=["big", "odd"], after="y"),
    ]
    correlation = {Go: "key"}

    def p(self, ctx: SagaContext, go: Go) -> None:
        self.data.calls.append(f"prepare {self.state_name}")

    def big(self, ctx: SagaContext, go: Go) -> bool:
        self.data.calls.append(f"big? {go.n}")
        return go.n > 5

    def odd(self, ctx: SagaContext, go: Go) -> bool:
        return go.n % 2 == 1

    def x(self, ctx: SagaContext, go: Go) -> None:
        self.data.calls.append(f"before {self.state_name}")

    def x2(self, ctx: SagaContext, go: Go) -> None:
        self.data.calls.append("before 2")

    def y(self, ctx: SagaContext, go: Go) -> None:
        self.data.calls.append(f"after {self.state_name}")


class Entered(Saga[Log], name="table.Entered"):
    states = ["a", {"name": "b", "on_enter": "hello"}]
    transitions = [on(Go, "a", "b")]
    correlation = {Go: "key"}

    def hello(self, ctx: SagaContext, go: Go) -> None:
        self.data.calls.append("entered b")


def _saga(cls: type[Saga[Any]], state: str) -> Saga[Any]:
    now = datetime.now(UTC)
    return cls(
        correlation_id="k",
        state=state,
        data=cls.data_type(),
        version=1,
        created_at=now,
        updated_at=now,
    )


def _through_machine(saga: Saga[Any], go: Go) -> bool:
    return bool(saga.machine.events[go.type_name].trigger(saga, SagaContext(saga, go), go))


@pytest.mark.parametrize("state", ["a", "b", "c"])
@pytest.mark.parametrize("n", [0, 6, 7])
def test_the_table_fires_as_the_machine_does(state: str, n: int) -> None:
    """Every (state, guard outcome): the same result, state and callbacks in the same order."""
    go = Go(key="k", n=n)
    table, machine = _saga(Branches, state), _saga(Branches, state)
    fired = table.fire(SagaContext(table, go), go)
    assert (_through_machine(machine, go), machine.state_name, machine.data.calls) == (
        fired,
        table.state_name,
        table.data.calls,
    )


def test_the_table_runs_without_the_machines_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain transition never reaches `Event.trigger`; one into a state with an enter
    callback does, and runs it."""

    def refused(*_args: Any, **_kwargs: Any) -> bool:
        raise AssertionError("went through the machine")

    go = Go(key="k", n=7)
    saga = _saga(Branches, "a")
    monkeypatch.setattr(Event, "trigger", refused)
    assert saga.fire(SagaContext(saga, go), go)
    assert "b" == saga.state_name
    monkeypatch.undo()
    entered = _saga(Entered, "a")
    calls: list[str] = []
    original = Event.trigger

    def counted(self: Event, *args: Any, **kwargs: Any) -> bool:
        calls.append(self.name)
        return bool(original(self, *args, **kwargs))

    monkeypatch.setattr(Event, "trigger", counted)
    assert entered.fire(SagaContext(entered, go), go)
    assert ([Go.type_name], "b", ["entered b"]) == (calls, entered.state_name, entered.data.calls)


def test_a_callback_error_propagates_and_leaves_the_state() -> None:
    """An exception in a before callback escapes before the state changes, as in the machine."""

    class Failing(Branches, name="table.Failing"):
        def x(self, ctx: SagaContext, go: Go) -> None:
            raise RuntimeError("boom")

    go = Go(key="k", n=7)
    saga = _saga(Failing, "a")
    with pytest.raises(RuntimeError, match="boom"):
        saga.fire(SagaContext(saga, go), go)
    assert "a" == saga.state_name
