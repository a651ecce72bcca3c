"""Building a saga class: checking its declarations and making its one `transitions` machine.

`Saga.__init_subclass__` calls `build` once per class; everything here reads the class's
declarations (states, transitions, correlation, ignore) and fills in what the runtime uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, cast, get_args, get_origin

from pydantic import BaseModel, ValidationError
from transitions import Machine, State

from outbox.messages import Message
from sagas import compensation, evolution, not_found, transition_table
from sagas import joins as join_decl
from sagas.declared import refuse_coroutines
from sagas.errors import SagaDefinitionError
from sagas.ledger import with_ledger

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sagas.definition import Correlator, Saga


def state_name(state: Any) -> str:
    """The name sagabox stores for a state given as a string, an Enum member or a State."""
    if type(state) is str:
        return state  # the common case, asked several times per message: no isinstance walk
    if isinstance(state, Enum):
        return state.name
    if isinstance(state, State):
        return str(state.name)
    if isinstance(state, Mapping):
        return state_name(state["name"])
    return str(state)


def default_correlator(_session: Session | None, message: Message) -> object:
    return message.correlation_id


def build(cls: type[Saga[Any]]) -> None:
    """Check a saga class's declarations and build its one machine."""
    joins = join_decl.joins_of(cls.transitions)
    cls.joins = tuple(joins)
    cls.data_type = _data_type(cls)
    if joins or cls.steps:
        cls.data_type = with_ledger(cls, cls.data_type)
    try:
        cls.data_type()
    except ValidationError as exc:
        raise SagaDefinitionError(
            f"{cls.__name__}: every field of {cls.data_type.__name__} needs a default, because "
            f"a new saga starts from {cls.data_type.__name__}() ({exc.error_count()} missing)"
        ) from None

    states = cls.states
    cls._state_enum = states if isinstance(states, type) and issubclass(states, Enum) else None
    if not list(states):
        raise SagaDefinitionError(f"{cls.__name__}: declare its `states`")
    transitions = join_decl.expand(cls, cls.transitions)
    compensation.declare(cls, transitions)
    declared, gated = evolution.prepare(cls, list(states), transitions)
    cls.state_names = tuple(state_name(s) for s in declared)
    cls.old_versions = evolution.old_versions(gated)
    initial = cls.initial if cls.initial is not None else declared[0]
    cls.initial_state = state_name(initial)

    message_types: dict[str, type[Message]] = {}
    spec: list[dict[str, Any]] = []
    starting: set[str] = set()
    for transition in gated:
        trigger = transition.get("trigger")
        if not (isinstance(trigger, type) and issubclass(trigger, Message) and trigger.type_name):
            raise SagaDefinitionError(
                f"{cls.__name__}: a transition's trigger must be a message class, got {trigger!r}"
            )
        message_types[trigger.type_name] = trigger
        _check_states(cls, trigger, transition)
        if _starts(cls, trigger, transition):
            starting.add(trigger.type_name)
        spec.append(
            {key: value for key, value in transition.items() if key != "starts"}
            | {"trigger": trigger.type_name}
        )
    cls.message_types = message_types
    refuse_coroutines(cls, transitions)
    not_found.check(cls)

    try:
        cls.machine = Machine(
            model=None,  # instances are driven through it, never attached to it
            states=states if cls._state_enum is not None else declared,
            transitions=spec,
            initial=initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            model_attribute="state",
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SagaDefinitionError(f"{cls.__name__}: {exc}") from exc

    cls._transition_table = transition_table.build(cls.machine)
    cls.final_states = frozenset(
        name for name in cls.state_names if getattr(cls.machine.get_state(name), "final", False)
    )
    cls.starting_triggers = frozenset(starting)
    cls._correlators = {
        message.type_name: _correlator(cls, message, how)
        for message, how in cls.correlation.items()
    }
    cls._ignored = {}
    for message, ignored_states in cls.ignore.items():
        names = frozenset(state_name(s) for s in ignored_states)
        unknown = names.difference(cls.state_names)
        if unknown:
            raise SagaDefinitionError(
                f"{cls.__name__}.ignore names undeclared states {sorted(unknown)} for "
                f"{message.__name__}"
            )
        cls._ignored[message.type_name] = names
        cls.message_types.setdefault(message.type_name, message)
    for waited in joins:
        # A part arriving again after its join completed is a duplicate: harmless, journaled.
        # One arriving before the saga waits for it is early, as any message: it fails and is
        # retried until the saga gets there, instead of being dropped.
        after = reachable_states(
            cls, [b.dest for b in (*waited.into, *filter(None, [waited.on_timeout]))]
        )
        for part in waited.parts:
            handled = cls.machine.events[part.type_name].transitions
            idle = frozenset(s for s in after if s not in handled)
            cls._ignored[part.type_name] = cls._ignored.get(part.type_name, frozenset()) | idle


def reachable_states(cls: type[Saga[Any]], starts: list[str]) -> set[str]:
    """The states `cls` can be in from any of `starts` on (those included): where a join's
    parts become early rather than ignored, and what a dashboard shows as still ahead."""
    edges: dict[str, set[str]] = {}
    for event in cls.machine.events.values():
        for source, candidates in event.transitions.items():
            for candidate in candidates:
                if candidate.dest is not None:
                    edges.setdefault(source, set()).add(state_name(candidate.dest))
    seen = {state_name(s) for s in starts}
    todo = list(seen)
    while todo:
        for dest in edges.get(todo.pop(), ()):
            if dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def _check_states(
    cls: type[Saga[Any]], trigger: type[Message], transition: Mapping[str, Any]
) -> None:
    # transitions accepts undeclared states silently; a typo would only show at run time.
    sources = transition.get("source")
    named = [] if sources == "*" else sources if isinstance(sources, list | tuple) else [sources]
    if transition.get("dest") is not None:
        named = [*named, transition["dest"]]
    unknown = sorted({state_name(s) for s in named} - set(cls.state_names))
    if unknown:
        raise SagaDefinitionError(
            f"{cls.__name__}: the transition on {trigger.__name__} names undeclared states "
            f"{unknown}; declare them in `states`"
        )


def _starts(cls: type[Saga[Any]], trigger: type[Message], transition: Mapping[str, Any]) -> bool:
    """Whether the transition creates a saga: its source names the initial state, or it says
    `starts=True` (needed for a wildcard source, which would otherwise start one by accident)."""
    sources = transition.get("source")
    wildcard = sources == "*" or (isinstance(sources, list | tuple) and "*" in sources)
    named = [] if sources == "*" else sources if isinstance(sources, list | tuple) else [sources]
    from_initial = cls.initial_state in {state_name(s) for s in named if s != "*"}
    starts = transition.get("starts")
    if starts is None:
        return from_initial
    if starts and not (from_initial or wildcard):
        raise SagaDefinitionError(
            f"{cls.__name__}: the transition on {trigger.__name__} says starts=True, but its "
            f"source does not include the initial state {cls.initial_state!r}"
        )
    return bool(starts)


def _data_type(cls: type[Saga[Any]]) -> type[BaseModel]:
    from sagas.definition import Saga  # the base class is defined after this module loads

    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Saga):
            (argument,) = get_args(base)
            if isinstance(argument, type) and issubclass(argument, BaseModel):
                return argument
    inherited = getattr(cls, "data_type", None)
    if inherited is None:
        raise SagaDefinitionError(
            f"{cls.__name__}: name its data model, as in `class {cls.__name__}(Saga[MyData])`"
        )
    return cast(type[BaseModel], inherited)


def _correlator(
    cls: type[Saga[Any]], message: type[Message], how: Correlator
) -> Callable[[Session | None, Message], object]:
    if isinstance(how, str):
        if how not in message.model_fields:
            raise SagaDefinitionError(
                f"{cls.__name__}.correlation: {message.__name__} has no field {how!r}"
            )
        return lambda _session, msg: getattr(msg, how)
    if not callable(how):
        raise SagaDefinitionError(
            f"{cls.__name__}.correlation[{message.__name__}] must be a field name or a function"
        )
    arity = len(inspect.signature(how).parameters)
    if arity == 1:
        return lambda _session, msg: how(msg)
    if arity == 2:

        def finder(session: Session | None, msg: Message) -> object:
            return how(session, msg)

        # What it finds depends on rows, which a retry may see: see `Saga.correlate`.
        finder.looks_up = True  # type: ignore[attr-defined]
        return finder
    raise SagaDefinitionError(
        f"{cls.__name__}.correlation[{message.__name__}]: a finder takes (message) or "
        "(session, message)"
    )
