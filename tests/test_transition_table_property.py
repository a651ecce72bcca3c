"""Property: a saga's precomputed transition table (`sagas.transition_table`), with the machine
as its fallback as `Saga.fire` uses it, does exactly what `transitions`' own event does, for any
machine: guarded branches (conditions, unless, a property as a guard), prepare/before/after
callbacks, enter/exit callbacks, internal, reflexive and wildcard transitions, final states,
`ignore_invalid_triggers`, and callbacks and guards that raise. Same result or error, same
state, same callbacks called with the same arguments in the same order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from transitions import Machine, MachineError

from outbox import Event as Message
from sagas import Saga, SagaContext, on, transition_table

CALLBACKS = ("c0", "c1", "c2", "boom")
GUARDS = ("yes", "no", "flip", "flag", "boom")
TRIGGERS = ("t0", "t1")


@dataclass(frozen=True)
class Sent:
    """What the saga's callbacks get as the message: `fire` reads its `type_name`."""

    type_name: str


class Model:
    """A saga stand-in: every callback records its name and arguments; `flag` is a property."""

    def __init__(self, state: str, flag: bool) -> None:
        self.state = state
        self._flag = flag
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        self._flips = 0

    @property
    def flag(self) -> bool:
        self.calls.append(("flag", self.state, ()))
        return self._flag

    def _record(self, name: str, args: tuple[Any, ...]) -> None:
        self.calls.append((name, self.state, args))

    def c0(self, *args: Any) -> None:
        self._record("c0", args)

    def c1(self, *args: Any) -> None:
        self._record("c1", args)

    def c2(self, *args: Any) -> None:
        self._record("c2", args)

    def boom(self, *args: Any) -> None:
        self._record("boom", args)
        raise RuntimeError("boom")

    def yes(self, *args: Any) -> bool:
        self._record("yes", args)
        return True

    def no(self, *args: Any) -> bool:
        self._record("no", args)
        return False

    def flip(self, *args: Any) -> bool:
        """True every other call: two candidates of one trigger see different answers."""
        self._record("flip", args)
        self._flips += 1
        return self._flips % 2 == 0


def _names(pool: tuple[str, ...], *, least: int = 0) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=least, max_size=2)


@st.composite
def machines(draw: st.DrawFn) -> tuple[list[Any], list[dict[str, Any]], bool]:
    names = [f"s{n}" for n in range(draw(st.integers(2, 4)))]
    states: list[Any] = []
    for name in names:
        spec: dict[str, Any] = {"name": name}
        for key in ("on_enter", "on_exit"):
            if draw(st.integers(0, 3)) == 0:
                spec[key] = draw(_names(CALLBACKS, least=1))
        if draw(st.booleans()) and draw(st.booleans()):
            spec["final"] = True
        if draw(st.integers(0, 4)) == 0:
            spec["ignore_invalid_triggers"] = draw(st.booleans())
        states.append(spec if len(spec) > 1 else name)
    transitions = []
    for _ in range(draw(st.integers(1, 7))):
        spec = {
            "trigger": draw(st.sampled_from(TRIGGERS)),
            "source": draw(st.sampled_from([*names, "*"])),
            "dest": draw(st.sampled_from([*names, None, "="])),
        }
        for key, pool in (
            ("conditions", GUARDS),
            ("unless", GUARDS),
            ("prepare", CALLBACKS),
            ("before", CALLBACKS),
            ("after", CALLBACKS),
        ):
            chosen = draw(_names(pool))
            if chosen:
                spec[key] = chosen
        transitions.append(spec)
    return states, transitions, draw(st.booleans())


def _build(states: list[Any], transitions: list[dict[str, Any]], ignore: bool) -> Machine:
    # As `sagas.building` builds a saga class's machine.
    return Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial="s0",
        auto_transitions=False,
        ignore_invalid_triggers=ignore,
        model_attribute="state",
    )


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        return "returned", run()
    except (RuntimeError, MachineError) as exc:
        return "raised", (type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(machines(), st.integers(0, 3), st.sampled_from(TRIGGERS), st.booleans())
def test_the_table_does_what_the_machine_does(
    spec: tuple[list[Any], list[dict[str, Any]], bool], start: int, trigger: str, flag: bool
) -> None:
    states, transitions, ignore = spec
    machine = _build(states, transitions, ignore)
    table = transition_table.build(machine)
    names = list(machine.states)
    state = names[start % len(names)]
    if trigger not in machine.events:
        return
    ctx, message = object(), Sent(trigger)
    plain, tabled = Model(state, flag), Model(state, flag)

    def through_machine() -> Any:
        return machine.events[trigger].trigger(plain, ctx, message)

    def as_saga_fires() -> Any:  # `Saga.fire`: the table, else the machine
        fired = transition_table.fire(table, machine, tabled, state, ctx, message)
        if fired is None:
            fired = machine.events[trigger].trigger(tabled, ctx, message)
        return fired

    expected = (_outcome(through_machine), plain.state, plain.calls)
    assert expected == (_outcome(as_saga_fires), tabled.state, tabled.calls)


class Kick(Message, type="tableprop.Kick"):
    key: str
    n: int = 0


class Calls(BaseModel):
    calls: list[str] = []


class Parent(Saga[Calls], name="tableprop.Parent"):
    states = ["a", "b", {"name": "c", "final": True}]
    transitions = [
        on(Kick, "a", "b", conditions="big", after="noted"),
        on(Kick, "a", "c", after="noted"),
        on(Kick, "b", "c", before="noted"),
    ]
    correlation = {Kick: "key"}

    def big(self, ctx: SagaContext, kick: Kick) -> bool:
        return kick.n > 1

    def noted(self, ctx: SagaContext, kick: Kick) -> None:
        self.data.calls.append(f"parent {self.state_name}")


class Child(Parent, name="tableprop.Child"):
    """Overrides a guard and a callback, inherits the transitions."""

    def big(self, ctx: SagaContext, kick: Kick) -> bool:
        return kick.n > 5

    def noted(self, ctx: SagaContext, kick: Kick) -> None:
        self.data.calls.append(f"child {self.state_name}")


class Entering(Parent, name="tableprop.Entering"):
    """Redeclares the states with an enter callback: its machine, not its parent's table."""

    states = ["a", {"name": "b", "on_enter": "entered"}, {"name": "c", "final": True}]

    def entered(self, ctx: SagaContext, kick: Kick) -> None:
        self.data.calls.append("entered b")


@pytest.mark.parametrize("cls", [Parent, Child, Entering])
@pytest.mark.parametrize("state", ["a", "b"])
@pytest.mark.parametrize("n", [0, 3, 9])
def test_saga_subclasses_fire_as_their_own_machine_does(
    cls: type[Saga[Calls]], state: str, n: int
) -> None:
    kick = Kick(key="k", n=n)
    tabled, plain = _saga(cls, state), _saga(cls, state)
    fired = tabled.fire(SagaContext(tabled, kick), kick)
    through = bool(
        plain.machine.events[kick.type_name].trigger(plain, SagaContext(plain, kick), kick)
    )
    assert (through, plain.state_name, plain.data.calls) == (
        fired,
        tabled.state_name,
        tabled.data.calls,
    )


def _saga(cls: type[Saga[Calls]], state: str) -> Saga[Calls]:
    now = datetime.now(UTC)
    return cls(
        correlation_id="k",
        state=state,
        data=Calls(),
        version=1,
        created_at=now,
        updated_at=now,
    )
