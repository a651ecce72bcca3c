"""Reading a saga class as a whole: its Mermaid state diagram, and `check()` for design slips."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sagas import evolution
from sagas.compensation import Track
from sagas.definition import Saga, state_name
from sagas.joins import Complete, JoinTimedOut


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


def labelled_edges(saga: type[Saga[Any]]) -> Iterator[tuple[str, str, str]]:
    """Every (source, destination, label) as diagrams draw it: the trigger with the guards
    that tell its branches apart (`[picked]`, `[not credit_ok]`), a join's parts as one
    trigger (its "still waiting" loops left out), the compensations a failing transition
    sends (`/ undo RefundPayment`), and `(old: v1 only)` on a transition kept for old versions."""
    joins = {j.source: j for j in saga.joins}
    for trigger, event in saga.machine.events.items():
        for source, transitions in event.transitions.items():
            branched = any(_guard(c) for t in transitions for c in t.conditions)
            for transition in transitions:
                guards = [_guard(c) for c in transition.conditions]
                if any(isinstance(c.func, Complete) for c in transition.conditions):
                    if not transition.dest:
                        continue  # a join still waiting for its other parts
                    trigger_label = joins[source].label_of_types
                elif trigger == JoinTimedOut.type_name and source in joins:
                    trigger_label = (
                        f"no {joins[source].label_of_types} within {_span(joins[source].within)}"
                    )
                else:
                    trigger_label = trigger
                label = trigger_label
                shown = [g for g in guards if g] or (["else"] if branched else [])
                if shown:
                    label += f" [{', '.join(shown)}]"
                undo = [f.steps for f in transition.after if isinstance(f, Track) and f.compensate]
                if undo:
                    names = [s.compensate.__name__ for s in reversed(undo[0])]
                    label += f" / undo {', '.join(names)}"
                dest = transition.dest if transition.dest is not None else source
                if (versions := _old_versions(transition)) is not None:
                    label += f" (old: {', '.join(f'v{v}' for v in sorted(versions))} only)"
                yield source, state_name(dest), label


def _old_versions(transition: Any) -> frozenset[int] | None:
    """The versions a transition is kept for (`on(..., versions=(1,))`), None for every one."""
    for condition in transition.conditions:
        gate = condition.func
        if isinstance(gate, evolution.Gate) and gate.versions is not None:
            return frozenset(gate.versions)
    return None


def _guard(condition: Any) -> str:
    func = condition.func
    if isinstance(func, evolution.Gate | Complete):
        return ""  # version gates and a join's own condition are not the user's guards
    name = func if isinstance(func, str) else getattr(func, "__name__", repr(func))
    return str(name) if condition.target else f"not {name}"


def _span(within: Any) -> str:
    seconds = int(within.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def mermaid(saga: type[Saga[Any]], path: Iterable[str] = ()) -> str:
    """The saga as a Mermaid `stateDiagram-v2`, each arrow labelled with its trigger and
    guards (see `labelled_edges`), and the transitions kept for old versions say so; states on
    `path` (say, one instance's journey) are highlighted."""
    lines = ["stateDiagram-v2", f"    [*] --> {saga.initial_state}"]
    seen: set[tuple[str, str, str]] = set()
    for source, dest, label in labelled_edges(saga):
        if (source, dest, label) not in seen:
            seen.add((source, dest, label))
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
    findings.extend(_compensation_findings(saga))
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


def _compensation_findings(saga: type[Saga[Any]]) -> Iterator[Finding]:
    """Steps whose compensation can never be sent: it cannot be built from the step's
    command, no transition compensates, or the step never counts as done."""
    if not saga.steps:
        return
    compensating = any(
        isinstance(f, Track) and f.compensate
        for event in saga.machine.events.values()
        for transitions in event.transitions.values()
        for transition in transitions
        for f in transition.after
    )
    for declared in saga.steps:
        undo = f"{declared.command.__name__} → {declared.compensate.__name__}"
        missing = declared.missing_fields()
        if missing:
            yield Finding(
                "compensation never sent",
                f"{undo}: {declared.compensate.__name__} needs {missing}, which "
                f"{declared.command.__name__} does not carry; pass step(..., build='method')",
            )
        if not compensating:
            yield Finding(
                "compensation never sent",
                f"{undo}: no transition says compensate=True",
            )
        unhandled = [m.__name__ for m in declared.done if m.type_name not in saga.message_types]
        if unhandled:
            yield Finding(
                "compensation never sent",
                f"{undo}: the step is done by {unhandled}, which no transition handles",
            )
