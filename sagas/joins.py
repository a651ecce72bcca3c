"""Composite events: one `join(...)` for "these messages, in any order, within this deadline".

As MassTransit's CompositeEvent: the saga waits in one state for every part; each part is kept
in the saga's data (the first of each type: a duplicate changes nothing), and the last one to
arrive completes the join, through the first of its `into` branches whose guards pass. With
`within=`, a durable timeout is scheduled when the saga enters the waiting state; it fires
`on_timeout` unless the join completed first (leaving the state cancels it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from outbox.messages import Message
from sagas.errors import SagaDefinitionError
from sagas.ledger import ledger
from sagas.timeouts import Timeout

if TYPE_CHECKING:
    from sagas.context import SagaContext
    from sagas.definition import Saga

M = TypeVar("M", bound=Message)

#: The key of the marker dict `join(...)` puts among a saga's transitions.
KEY = "join"


class JoinTimedOut(Timeout, type="sagabox.JoinTimedOut"):
    """Delivered back to a saga whose join did not complete within its deadline."""


@dataclass(frozen=True)
class Branch:
    """Where a completed join (or its deadline) leads: a state, with `on(...)`'s options."""

    dest: str
    options: Mapping[str, Any] = field(default_factory=dict)


def branch(dest: str, **options: Any) -> Branch:
    """One way out of a join: `branch("denied", conditions="must_deny", after="deny")`.

    `options` are `on(...)`'s (`conditions`, `unless`, `before`, `after`, `prepare`); of
    several branches, the first whose guards pass is taken, as with several `on(...)`.
    """
    return Branch(dest, dict(options))


@dataclass(frozen=True)
class Join:
    """A declared join: its parts, the state it waits in, its ways out and its deadline."""

    parts: tuple[type[Message], ...]
    source: str
    into: tuple[Branch, ...]
    within: timedelta | None
    on_timeout: Branch | None

    @property
    def name(self) -> str:
        """The key of its parts in the saga's data, and the name of its deadline's timeout."""
        return f"join/{self.source}"

    @property
    def label_of_types(self) -> str:
        """How diagrams name it: its parts' type names joined by `+`."""
        return " + ".join(part.type_name for part in self.parts)


def join(
    *parts: type[Message],
    source: str,
    into: str | Branch | Sequence[Branch],
    within: timedelta | None = None,
    on_timeout: str | Branch | None = None,
) -> dict[str, Any]:
    """Wait in `source` for every message of `parts`, in any order; then go `into` a state.

    Goes among a saga's `transitions`, like `on(...)`::

        join(CreditChecked, CriminalActivityChecked, source="checking", within=DAY,
             into=[branch("denied", conditions="must_deny"), branch("offered")],
             on_timeout=branch("denied", after="checks_overdue"))

    Actions and guards read the parts with `self.part(CreditChecked)`.
    """
    if len(parts) < 2 or len(set(parts)) != len(parts):
        raise SagaDefinitionError(f"join() needs two or more distinct message classes: {parts}")
    for part in parts:
        if not (isinstance(part, type) and issubclass(part, Message) and part.type_name):
            raise SagaDefinitionError(f"join() parts must be message classes, got {part!r}")
        if issubclass(part, JoinTimedOut):
            # Only `within=` schedules it, and then it leaves by `on_timeout=`: as a part it
            # would be waited for forever.
            raise SagaDefinitionError(
                "join(): JoinTimedOut is the join's own deadline, not a part: give the deadline "
                "with within= and where it leads with on_timeout="
            )
    branches = (
        (_branch(into),) if isinstance(into, str | Branch) else tuple(_branch(b) for b in into)
    )
    if not branches:
        raise SagaDefinitionError("join(): say where it goes with into=")
    if (within is None) != (on_timeout is None):
        raise SagaDefinitionError(
            "join(): within= and on_timeout= go together: a deadline needs somewhere to go, "
            "and a timeout branch needs a deadline"
        )
    if within is not None and within <= timedelta(0):
        raise SagaDefinitionError("join(): within= must be a positive interval")
    timeout = None if on_timeout is None else _branch(on_timeout)
    return {KEY: Join(tuple(parts), str(source), branches, within, timeout)}


def _branch(value: str | Branch) -> Branch:
    return value if isinstance(value, Branch) else Branch(str(value))


# --- the callables the expanded transitions run ----------------------------------------------


@dataclass(frozen=True)
class KeepPart:
    """`prepare`: keep the part in the saga's data, unless one of its type is there already."""

    join: Join

    def __call__(self, ctx: SagaContext, message: Message) -> None:
        book = ledger(ctx.saga)
        parts = book.parts.setdefault(self.join.name, {})
        if len(book.parts) > 1:  # only then can `part` read the wrong join's (see `Ledger`)
            book.latest = self.join.name
        # The message's own fields: its envelope (id, times, causation) is in the journal.
        body = message.model_dump(mode="json", exclude=set(Message.model_fields))
        parts.setdefault(message.type_name, body)


@dataclass(frozen=True)
class Complete:
    """Condition: every part is in."""

    join: Join

    def __call__(self, ctx: SagaContext, _message: Message) -> bool:
        have = ledger(ctx.saga).parts.get(self.join.name, {})
        return all(part.type_name in have for part in self.join.parts)


@dataclass(frozen=True)
class Arm:
    """`after`, on every transition into the waiting state: schedule the join's deadline."""

    join: Join

    def __call__(self, ctx: SagaContext, _message: Message) -> None:
        assert self.join.within is not None
        ctx.schedule(self.join.name, JoinTimedOut(), after=self.join.within)


@dataclass(frozen=True)
class ArmNew:
    """`after`, on a part that starts the saga in the waiting state: nothing entered that
    state by a transition, so the deadline is scheduled here, when the saga is created."""

    join: Join

    def __call__(self, ctx: SagaContext, message: Message) -> None:
        if ctx.saga.version == 0:  # not stored yet: this part created it
            Arm(self.join)(ctx, message)


@dataclass(frozen=True)
class Forget:
    """`before`, when the saga enters the waiting state: a join waited again starts afresh."""

    join: Join

    def __call__(self, ctx: SagaContext, _message: Message) -> None:
        ledger(ctx.saga).parts.pop(self.join.name, None)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def expand(cls: type[Saga[Any]], transitions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`cls`'s transitions with each `join(...)` spelled out as plain transitions, and the
    transitions entering a join's state arming its deadline."""
    joins = [t[KEY] for t in transitions if KEY in t]
    seen: dict[str, Join] = {}
    for spec in joins:
        if spec.source in seen:
            raise SagaDefinitionError(
                f"{cls.__name__}: two joins wait in {spec.source!r}; join every part in one"
            )
        seen[spec.source] = spec
        if any(b.dest == spec.source for b in (*spec.into, *filter(None, [spec.on_timeout]))):
            raise SagaDefinitionError(
                f"{cls.__name__}: the join in {spec.source!r} must lead out of it"
            )
    for transition in transitions:
        if KEY not in transition:
            _refuse_overlap(cls, transition, joins)
    expanded: list[dict[str, Any]] = []
    for transition in transitions:
        if KEY in transition:
            expanded.extend(_spelled_out(transition[KEY]))
        else:
            expanded.append(dict(transition))
    for transition in expanded:
        dest = transition.get("dest")
        spec = seen.get(str(dest)) if dest is not None else None
        if spec is None or transition.get("source") == spec.source:
            continue
        transition["before"] = [Forget(spec), *_listed(transition.get("before"))]
        if spec.within is not None:
            transition["after"] = [*_listed(transition.get("after")), Arm(spec)]
    return expanded


def _refuse_overlap(
    cls: type[Saga[Any]], transition: Mapping[str, Any], joins: Sequence[Join]
) -> None:
    """Refuse an `on(...)` taking a join's part (or its deadline) in the state the join waits
    in: `transitions` tries them in declared order, so one of the two would never run."""
    from sagas.building import state_name  # it imports this module

    trigger, sources = transition.get("trigger"), transition.get("source")
    listed = sources if isinstance(sources, list | tuple) else [sources]
    named = {"*" if s == "*" else state_name(s) for s in listed}
    for spec in joins:
        taken = [*spec.parts, *([JoinTimedOut] if spec.within is not None else [])]
        if trigger in taken and ("*" in named or spec.source in named):
            name = getattr(trigger, "__name__", repr(trigger))
            raise SagaDefinitionError(
                f"{cls.__name__}: on({name}, ...) and the join in {spec.source!r} both take "
                f"{name} in {spec.source!r}, and only the one declared first would ever run: "
                f"give the join that way out instead (into=[branch(dest, conditions=..., "
                f"after=...), ...]), or give the on(...) a source the join does not wait in"
            )


def _spelled_out(spec: Join) -> Iterator[dict[str, Any]]:
    keep, complete = KeepPart(spec), Complete(spec)
    for part in spec.parts:
        for way in spec.into:
            options = dict(way.options)
            yield {
                **options,
                "trigger": part,
                "source": spec.source,
                "dest": way.dest,
                "prepare": [keep, *_listed(options.get("prepare"))],
                "conditions": [complete, *_listed(options.get("conditions"))],
            }
        # Not all in yet: stay, with the part kept (and the deadline armed, if it started
        # the saga: a saga waiting in its initial state never entered it by a transition).
        stay: dict[str, Any] = {"trigger": part, "source": spec.source, "dest": None,
                                "prepare": [keep], "unless": [complete]}  # fmt: skip
        if spec.within is not None:
            stay["after"] = [ArmNew(spec)]
        yield stay
    if spec.on_timeout is not None:
        yield {
            **spec.on_timeout.options,
            "trigger": JoinTimedOut,
            "source": spec.source,
            "dest": spec.on_timeout.dest,
        }


def joins_of(transitions: Sequence[Mapping[str, Any]]) -> list[Join]:
    """The joins among declared transitions."""
    return [t[KEY] for t in transitions if KEY in t]


def part(saga: Saga[Any], message_type: type[M]) -> M | None:
    """The part of type `message_type` the saga's join kept, or None if none came yet; of
    several joins on that type, the one that kept a part last (the one the saga is in)."""
    book = ledger(saga)
    latest = book.parts.get(book.latest, {})
    for parts in [latest, *book.parts.values()]:
        body = parts.get(message_type.type_name)
        if body is not None:
            return message_type.model_validate(body)
    return None
