"""Compensation as a declaration: each step names the command that undoes it.

A saga lists its `steps = [step(ChargePayment, compensate=RefundPayment, done=PaymentCharged)]`
and marks the transitions where it fails with `on(..., compensate=True)`. The step's command is
remembered when an action sends it, and the step counts as completed when a transition on its
`done` message fires (without `done`: once it is sent). When a compensating transition fires,
every completed step is undone in reverse order of completion: its compensating command is
sent through the outbox (so the worker's retries and dead letters apply to it, as to any
command), to the endpoint the step's command went to, and journaled as `compensating`.

The compensating command is built from the step's command: the fields they share are copied
(`RefundPayment(order_id=..., amount=...)` from `ChargePayment`), or a saga method named by
`build=` makes it from `(ctx, sent_command)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outbox.messages import Command, Message
from outbox.sync_only import is_coroutine_callable
from sagas.errors import SagaDefinitionError
from sagas.ledger import SentStep, ledger

if TYPE_CHECKING:
    from sagas.context import SagaContext
    from sagas.definition import Saga

#: The journal outcome of a compensating command sent.
COMPENSATING = "compensating"


@dataclass(frozen=True)
class Step:
    """A step of the saga: a command it sends, and the command that undoes it."""

    command: type[Command]
    compensate: type[Command]
    done: tuple[type[Message], ...] = ()
    build: str | None = None
    to: str | None = None

    def missing_fields(self) -> list[str]:
        """Required fields of the compensating command the step's command does not carry
        (none with `build=`): while any are missing, the compensation can never be sent."""
        if self.build is not None:
            return []
        return sorted(
            name
            for name, info in self.compensate.model_fields.items()
            if info.is_required() and name not in self.command.model_fields
        )


def step(
    command: type[Command],
    *,
    compensate: type[Command],
    done: type[Message] | Sequence[type[Message]] | None = None,
    build: str | None = None,
    to: str | None = None,
) -> Step:
    """Declare that `command` is undone by `compensate` once the step is `done`.

    `done`: the message(s) whose transition means the step succeeded (default: sent is done).
    `build`: the name of a saga method `(ctx, sent_command) -> Command` making the compensating
    command (default: the fields the two commands share are copied). `to`: the endpoint the
    compensation goes to (default: where the step's command was sent).
    """
    for what, value in (("command", command), ("compensate", compensate)):
        if not (isinstance(value, type) and issubclass(value, Command) and value.type_name):
            raise SagaDefinitionError(f"step(): {what}= must be a Command class, got {value!r}")
    dones = () if done is None else (done,) if isinstance(done, type) else tuple(done)
    return Step(command, compensate, dones, build, to)


@dataclass(frozen=True)
class Track:
    """The last `after` of every transition of a saga with steps: remember the step commands
    it sent and the steps it completed, or (on a compensating transition) undo them."""

    steps: tuple[Step, ...]
    compensate: bool = False

    def __call__(self, ctx: SagaContext, message: Message) -> None:
        book = ledger(ctx.saga)
        if self.compensate:
            self._undo(ctx)
            return
        by_command = {s.command.type_name: s for s in self.steps}
        for emitted in ctx.emitted:
            sent = by_command.get(emitted.message.type_name)
            if sent is None:
                continue
            book.sent[sent.command.type_name] = SentStep(
                destination=emitted.destination, body=emitted.message.model_dump(mode="json")
            )
            if not sent.done:
                _complete(book.done, sent)
        for done in self.steps:
            answered = message.type_name in {m.type_name for m in done.done}
            if answered and done.command.type_name in book.sent:
                _complete(book.done, done)

    def _undo(self, ctx: SagaContext) -> None:
        from sagas import journal  # it imports the saga classes this module serves

        book = ledger(ctx.saga)
        by_command = {s.command.type_name: s for s in self.steps}
        saga = ctx.saga
        for name in reversed(book.done):
            undo = by_command[name]
            sent = book.sent[name]
            original = undo.command.model_validate(sent.body)
            command = _compensation(saga, ctx, undo, original)
            destination = undo.to or sent.destination
            if destination is None:
                raise SagaDefinitionError(
                    f"{saga.saga_type}: {undo.command.__name__} was published, so its "
                    f"compensation has nowhere to go: pass step(..., to='<endpoint>')"
                )
            stamped = ctx.send(command, to=destination)
            book.compensated.append(undo.compensate.type_name)
            if ctx.session is not None:
                journal.journal(
                    ctx.session,
                    type(saga),
                    saga.correlation_id,
                    stamped,
                    COMPENSATING,
                    from_state=saga.state_name,
                    to_state=saga.state_name,
                    # No version: the saga's transition line that sent it carries that one.
                    incarnation=saga.incarnation,
                    definition_version=saga.definition_version,
                )
        book.done.clear()


def _complete(done: list[str], completed: Step) -> None:
    if completed.command.type_name not in done:
        done.append(completed.command.type_name)


def _compensation(saga: Saga[Any], ctx: SagaContext, undo: Step, original: Command) -> Command:
    if undo.build is not None:
        command = getattr(saga, undo.build)(ctx, original)
        if not isinstance(command, undo.compensate):
            raise SagaDefinitionError(
                f"{saga.saga_type}.{undo.build} must return a {undo.compensate.__name__}, "
                f"got {type(command).__name__}"
            )
        return command
    envelope = set(Message.model_fields)
    shared = {
        name: value
        for name, value in original.model_dump().items()
        if name in undo.compensate.model_fields and name not in envelope
    }
    return undo.compensate.model_validate(shared)


def _check_build(cls: type[Saga[Any]], declared: Step) -> None:
    """Refuse a `build=` that cannot make the compensation when the saga fails: a method that
    is missing, `async def` (never awaited) or does not take `(ctx, sent_command)`."""
    named = f"{cls.__name__}: step({declared.command.__name__}, build={declared.build!r})"
    assert declared.build is not None
    if not callable(getattr(cls, declared.build, None)):
        raise SagaDefinitionError(f"{named} names no method of the saga")
    if is_coroutine_callable(getattr(cls, declared.build)):
        raise SagaDefinitionError(
            f"{named} is `async def`, but it runs synchronously in the failing transition and "
            "is never awaited: make it a plain `def` returning the compensating command"
        )
    raw = inspect.getattr_static(cls, declared.build)
    func = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
    receivers = 0 if isinstance(raw, staticmethod) else 1
    try:
        inspect.signature(func).bind(*[None] * (receivers + 2))
    except TypeError:
        raise SagaDefinitionError(
            f"{named}: the method takes (ctx, sent_command) and returns the compensating "
            f"{declared.compensate.__name__}"
        ) from None
    except ValueError:
        return  # no signature to read (a builtin): it is called all the same


def declare(cls: type[Saga[Any]], transitions: list[dict[str, Any]]) -> None:
    """Check `cls.steps` and wire their tracking into `transitions` (in place)."""
    steps = tuple(cls.steps)
    for declared in steps:
        if not isinstance(declared, Step):
            raise SagaDefinitionError(f"{cls.__name__}.steps: use step(...), got {declared!r}")
        if declared.build is not None:
            _check_build(cls, declared)
    names = [s.command.type_name for s in steps]
    if len(set(names)) != len(names):
        raise SagaDefinitionError(f"{cls.__name__}.steps: one step per command, got {names}")
    for transition in transitions:
        compensates = bool(transition.pop("compensate", False))
        if compensates and not steps:
            raise SagaDefinitionError(
                f"{cls.__name__}: a transition says compensate=True, but the saga declares no "
                "steps = [step(Command, compensate=Undo)]"
            )
        if steps:
            after = transition.get("after")
            listed = (
                [] if after is None else list(after) if isinstance(after, list | tuple) else [after]
            )
            transition["after"] = [*listed, Track(steps, compensates)]
