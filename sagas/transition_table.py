"""A saga class's (trigger, state) -> transitions table, so that firing one skips the machinery
around `transitions`' own `Transition` objects.

`Event.trigger` wraps every transition in a partial, the machine's queue check, an `EventData`,
the machine-wide callback lists (which sagabox never sets) and several log calls; under the
worker's profile that cost about as much as the saga's own callbacks. The table, built once per
class from the machine itself, holds each (trigger, state)'s candidate `Transition`s, and `fire`
runs what `Transition.execute` runs, in its order: prepare, conditions (the first that fails
moves on to the next candidate), before, the state change, after, every callback resolved by
the machine's own `resolve_callable`. What the table does not model (a state with enter or exit
callbacks, machine-wide callbacks, events sent as `EventData`) it leaves out, and `fire`
returns None for it: the caller then goes through the machine, as before.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData, Machine, State, Transition

Table = dict[tuple[str, str], tuple[Transition, ...]]


def build(machine: Machine) -> Table:
    """The (trigger, source state name) pairs `fire` can run without the machine."""
    machine_wide = (
        machine.prepare_event,
        machine.finalize_event,
        machine.before_state_change,
        machine.after_state_change,
        machine.on_exception,
        machine.on_final,
    )
    if any(machine_wide) or machine.send_event or machine.has_queue:
        return {}
    table: Table = {}
    for trigger, event in machine.events.items():
        for source, candidates in event.transitions.items():
            if all(_plain(machine, transition) for transition in candidates):
                table[(trigger, source)] = tuple(candidates)
    return table


def _plain(machine: Machine, transition: Transition) -> bool:
    """Whether `transition` has nothing but its own callbacks: an internal one, or a change
    between plain states with no enter or exit callbacks."""
    if type(transition) is not Transition:
        return False
    if not transition.dest:
        return True
    source, dest = machine.get_state(transition.source), machine.get_state(transition.dest)
    return (
        type(source) is State and type(dest) is State and not source.on_exit and not dest.on_enter
    )


def fire(
    table: Table, machine: Machine, model: Any, state: str, ctx: Any, message: Any
) -> bool | None:
    """Run the transition of `message`'s trigger from `state` as `Transition.execute` would,
    each callback called with (ctx, message): True if one ran, False if every candidate's
    conditions refused; None if the table has no entry for it (go through the machine)."""
    candidates = table.get((message.type_name, state))
    if candidates is None:
        return None
    args = (ctx, message)
    # What `resolve_callable` reads (the model), built once for every callback of the step.
    resolve, data = machine.resolve_callable, EventData(None, None, machine, model, args, {})
    for transition in candidates:
        for callback in transition.prepare:
            resolve(callback, data)(*args)
        if not all(
            resolve(condition.func, data)(*args) == condition.target
            for condition in transition.conditions
        ):
            continue
        for callback in transition.before:
            resolve(callback, data)(*args)
        if transition.dest:
            machine.set_state(transition.dest, model)
        for callback in transition.after:
            resolve(callback, data)(*args)
        return True
    return False
