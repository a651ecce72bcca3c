"""Refusing `async def` actions, guards, callbacks and correlators when a saga class is defined.

Saga actions are synchronous decisions: the runtime calls them inside the caller's transaction
and `transitions` does not await them, so an `async def` one would return a coroutine nobody
runs (a guard's coroutine is even truthy). Async services reach sagas through `sagabox.aio`,
which runs these same synchronous methods on their `AsyncSession`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from outbox.sync_only import is_coroutine_callable
from sagas.errors import SagaDefinitionError

if TYPE_CHECKING:
    from sagas.definition import Saga

#: The keys of a transition that name callables (transitions' own names).
TRANSITION_CALLBACKS = ("conditions", "unless", "before", "after", "prepare")
#: The keys of a state that name callables.
STATE_CALLBACKS = ("on_enter", "on_exit", "on_timeout")


def refuse_coroutines(
    cls: type[Saga[Any]], transitions: Iterable[Mapping[str, Any]] | None = None
) -> None:
    """Raise `SagaDefinitionError` naming the first `async def` callable `cls` declares
    (in `transitions`, when given: the declared ones with each `join(...)` spelled out)."""
    for role, named in _declared(cls, cls.transitions if transitions is None else transitions):
        func = getattr(cls, named, None) if isinstance(named, str) else named
        if func is not None and is_coroutine_callable(func):
            what = named if isinstance(named, str) else getattr(func, "__qualname__", repr(func))
            raise SagaDefinitionError(
                f"{cls.__name__}: {role} {what!r} is `async def`, but saga actions, guards and "
                "callbacks run synchronously inside the caller's transaction and are never "
                "awaited. Make it a plain `def` that decides and emits (ctx.send, "
                "ctx.publish, ctx.schedule); do async I/O in the caller before or after "
                "(sagabox.aio runs the saga on an AsyncSession), or in a handler of its own "
                "endpoint that reports back with a message"
            )


def _declared(
    cls: type[Saga[Any]], transitions: Iterable[Mapping[str, Any]]
) -> Iterator[tuple[str, Any]]:
    for transition in transitions:
        for key in TRANSITION_CALLBACKS:
            for named in _listed(transition.get(key)):
                yield f"transition {key}", named
    states = cls.states
    if not isinstance(states, type):  # an Enum declares no callbacks
        for state in states:
            for key in STATE_CALLBACKS:
                value = state.get(key) if isinstance(state, Mapping) else getattr(state, key, None)
                for named in _listed(value):
                    yield f"state {key}", named
    for how in cls.correlation.values():
        if not isinstance(how, str):
            yield "correlation finder", how


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
