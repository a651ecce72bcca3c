"""Reading a saga class as a whole: its Mermaid state diagram, and `check()` for design slips."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sagas import evolution
from sagas.definition import Saga, state_name


@dataclass(frozen=True)
class Finding:
    """One thing `check()` found wrong with a saga definition."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def edges(saga: type[Saga[Any]]) -> Iterator[tuple[str, str, str]]:
    """Every (source, destination, trigger) of the saga; internal transitions stay in place."""
    for trigger, event in saga.machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                dest = transition.dest if transition.dest is not None else source
                yield source, state_name(dest), trigger


def old_version_edges(saga: type[Saga[Any]]) -> dict[tuple[str, str, str], frozenset[int]]:
    """The edges kept only for instances of older versions (`on(..., versions=(1,))`), with
    those versions."""
    found: dict[tuple[str, str, str], frozenset[int]] = {}
    for trigger, event in saga.machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                for condition in transition.conditions:
                    gate = condition.func
                    if isinstance(gate, evolution.Gate) and gate.versions is not None:
                        dest = transition.dest if transition.dest is not None else source
                        found[(source, state_name(dest), trigger)] = gate.versions
    return found


def mermaid(saga: type[Saga[Any]], path: Iterable[str] = ()) -> str:
    """The saga as a Mermaid `stateDiagram-v2`; states on `path` (say, one instance's
    journey) are highlighted, and the transitions kept for old versions say so."""
    lines = ["stateDiagram-v2", f"    [*] --> {saga.initial_state}"]
    seen: set[tuple[str, str, str]] = set()
    old = old_version_edges(saga)
    for source, dest, trigger in edges(saga):
        if (source, dest, trigger) not in seen:
            seen.add((source, dest, trigger))
            label = trigger
            if (versions := old.get((source, dest, trigger))) is not None:
                label += f" (old: {', '.join(f'v{v}' for v in sorted(versions))} only)"
            lines.append(f"    {source} --> {dest}: {label}")
    lines.extend(f"    {final} --> [*]" for final in sorted(saga.final_states))
    visited = [state for state in dict.fromkeys(path) if state in saga.state_names]
    if visited:
        lines.append("    classDef visited fill:#d4f7d4,stroke:#2a7a2a,stroke-width:2px")
        lines.append(f"    class {','.join(visited)} visited")
    return "\n".join(lines) + "\n"


def check(saga: type[Saga[Any]], occupied: Iterable[tuple[int, str]] = ()) -> list[Finding]:
    """Report unreachable states, non-final states with no way out, final states with ways out,
    messages the saga names but no transition uses, `on_enter_<state>`-style methods that
    nothing calls (sagabox wires callbacks only where a state declares them), and the
    (definition version, state) pairs in `occupied` (live instances) it could not load."""
    findings: list[Finding] = []
    for version, state in sorted(set(occupied)):
        plan = evolution.plan(saga, version, version, state)
        if plan.problem is not None:
            findings.append(
                Finding(
                    "occupied state dropped",
                    f"live v{version} instances in {state!r} {plan.describe()}",
                )
            )
    outgoing: dict[str, set[str]] = {name: set() for name in saga.state_names}
    used_triggers = set()
    for source, dest, trigger in edges(saga):
        used_triggers.add(trigger)
        if dest != source:
            outgoing[source].add(dest)

    reachable, frontier = {saga.initial_state}, [saga.initial_state]
    while frontier:
        for dest in outgoing[frontier.pop()] - reachable:
            reachable.add(dest)
            frontier.append(dest)
    for name in saga.state_names:
        if name not in reachable and name not in saga.legacy_states:
            findings.append(Finding("unreachable state", f"{name!r} cannot be reached"))
        elif name not in saga.final_states and not outgoing[name]:
            findings.append(
                Finding("dead end", f"{name!r} is not final and no transition leaves it")
            )
        elif name in saga.final_states and outgoing[name]:
            findings.append(
                Finding("final state with exits", f"{name!r} is final, so its exits never run")
            )
    for trigger in sorted(set(saga.message_types) - used_triggers):
        findings.append(Finding("unused message", f"{trigger} starts no transition"))
    for attribute in sorted(vars(saga)):
        if attribute.startswith(("on_enter_", "on_exit_")) and callable(getattr(saga, attribute)):
            findings.append(
                Finding(
                    "callback never called",
                    f"{attribute}: name it in the state, e.g. "
                    f'{{"name": "...", "{attribute[: attribute.index("_", 3)]}": "{attribute}"}}',
                )
            )
    return findings
