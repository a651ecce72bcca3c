"""Request/reply and faults for sagas: what a request awaits, and replies and faults routed home.

`ctx.request(ChargeCard(...), to="payment", timeout=...)` sends the command with a return
address (`outbox.return_address`) and schedules a `RequestTimedOut[ChargeCard]` timeout named
after the request, so what the saga awaits is in its row, survives a crash and shows in
`sagabox sagas show`. The handler answers with `ctx.reply(...)`; the reply names the saga
instance and the request in its headers, so it reaches that instance with no correlation
mapping. A reply while the request is pending cancels its timeout and fires the saga's
transition for the reply; one arriving later (timed out, answered already, state left) is
journaled `late` and never applied, as is a fault the saga's state no longer expects. A saga
that declares a transition for `Faulted[Cmd]` asks the receivers of its `Cmd`s for their
faults; a fault of a pending request cancels it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from uuid import UUID

from outbox.database import Executor
from outbox.errors import MalformedEnvelope
from outbox.faults import Faulted, fault_type_name
from outbox.generic_messages import parametrised
from outbox.messages import Command, Event, Message
from outbox.return_address import addressee, sender_headers, wire_headers
from sagas import store
from sagas.errors import InvalidTransition, SagaDefinitionError, SagaError, UnknownSagaType
from sagas.timeouts import Timeout

if TYPE_CHECKING:
    from sagas.context import Emitted, SagaContext
    from sagas.definition import Saga
    from sagas.outcomes import Handled
    from sagas.runtime import SagaRuntime

C = TypeVar("C", bound=Message)

REQUEST_TIMED_OUT = "sagabox.RequestTimedOut"
_PREFIX = "request:"


class Misaddressed(SagaError):
    """A reply or fault names a saga that is not here, or an id that is not its saga's: its
    headers were forged or mangled, so it is dead-lettered with the reason, never applied."""


class RequestTimedOut(Timeout, Generic[C], abstract=True):
    """No reply came to a `ctx.request` in time: `RequestTimedOut[ChargeCard]`.

    Declare a transition for it where the saga waits for the reply.
    """

    #: The id of the request that got no answer.
    request_id: UUID | None = None
    #: Its message type.
    request_type: str = ""

    #: The command class this timeout is about (set on `RequestTimedOut[Cmd]`).
    of: ClassVar[type[Message] | None] = None

    def __class_getitem__(cls, item: Any) -> Any:
        if not (isinstance(item, type) and issubclass(item, Message)):
            return cls  # `X[Any]`, `X[T]` in an annotation: any of them
        if not issubclass(item, Command):
            # `ctx.request` sends commands only: a transition on this timeout never fires.
            raise TypeError(
                f"RequestTimedOut[{item.__name__}]: {item.__name__} is not a Command, and only "
                "commands are requested (ctx.request); declare it for the command the saga "
                "requests"
            )
        return parametrised(cls, REQUEST_TIMED_OUT, item)


def timeout_name(request_type: str, request_id: UUID) -> str:
    """The name of the pending timeout that stands for a request (shown by `sagas show`)."""
    return f"{_PREFIX}{request_type}:{request_id}"


def pending_request(timeouts: Mapping[str, Any], request_id: UUID) -> str | None:
    """The name of the pending timeout of request `request_id`, or None: not awaited (any more)."""
    suffix = f":{request_id}"
    return next((n for n in timeouts if n.startswith(_PREFIX) and n.endswith(suffix)), None)


# --- sending -----------------------------------------------------------------------------------


def request(ctx: SagaContext, command: Command, *, to: str, timeout: timedelta) -> Command:
    """Send `command` to `to` as a request the saga awaits a reply to for `timeout`."""
    if not isinstance(command, Command):
        raise TypeError(f"request() takes a Command, got {type(command).__name__}")
    if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
        raise ValueError(f"request({command.type_name}): timeout must be a positive timedelta")
    cls = type(ctx.saga)
    timed_out: type[RequestTimedOut[Any]] = parametrised(
        RequestTimedOut, REQUEST_TIMED_OUT, type(command)
    )
    if timed_out.type_name not in cls.message_types:
        raise SagaDefinitionError(
            f"{cls.__name__} requests {command.type_name} but declares nothing for "
            f"RequestTimedOut[{type(command).__name__}]: declare a transition for it (or list "
            "it in `ignore`), or the saga could wait for the reply forever"
        )
    sent = ctx._emit(command, to, request=True)
    ctx.schedule(
        timeout_name(command.type_name, sent.message_id),
        timed_out(request_id=sent.message_id, request_type=command.type_name),
        after=timeout,
    )
    return sent


def outgoing_headers(endpoint: str | None, saga: Saga[Any], emitted: Emitted) -> dict[str, str]:
    """The return-address headers of a message the saga emits: for a request, and for a
    command whose fault the saga declares a transition for; none for anything else."""
    message = emitted.message
    cls = type(saga)
    fault = (
        not isinstance(message, Event)
        and emitted.destination is not None
        and fault_type_name(message.type_name) in cls.message_types
    )
    if not (emitted.request or fault):
        return {}
    if not endpoint:
        raise SagaDefinitionError(
            f"{cls.saga_type} expects an answer to {message.type_name}, but this runtime has no "
            "endpoint to address it to: create it as SagaRuntime(..., endpoint='<queue name>'), "
            "or run the saga in a sagabox.App"
        )
    return sender_headers(endpoint, cls.saga_type, saga.id, reply=emitted.request, fault=fault)


# --- receiving ---------------------------------------------------------------------------------


def addressed_saga(runtime: SagaRuntime, message: Message) -> type[Saga[Any]] | None:
    """The saga class a reply or fault is addressed to, or None for any other message."""
    try:
        to = addressee(wire_headers(message))
    except MalformedEnvelope as exc:  # the worker refuses these unread; this is defence
        raise Misaddressed(f"{message.type_name} {message.message_id}: {exc}") from None
    if to is None:
        return None
    try:
        return runtime.saga_type(to.saga_type)
    except UnknownSagaType:
        raise Misaddressed(
            f"{message.type_name} {message.message_id} is addressed to saga type "
            f"{to.saga_type[:80]!r}, which this endpoint does not run: refused"
        ) from None


def deliver(
    runtime: SagaRuntime, executor: Executor, cls: type[Saga[Any]], message: Message
) -> Handled:
    """Apply a reply or fault to the saga instance its headers name (see the module doc)."""
    from sagas.outcomes import unchanged
    from sagas.stepping import DELETE_TIMEOUTS, apply_step

    to = addressee(wire_headers(message))
    assert to is not None, "deliver() is only called for addressed messages"
    correlation_id = message.correlation_id or ""
    if not correlation_id or cls.id_for(correlation_id) != to.saga_id:
        raise Misaddressed(
            f"{message.type_name} {message.message_id} names {cls.saga_type} instance "
            f"{to.saga_id}, which is not the instance of its correlation id "
            f"{correlation_id[:80]!r}: refused as forged or mangled"
        )
    saga = store.load(executor, cls, correlation_id)

    def done(outcome: Any) -> Handled:
        state = None if saga is None else saga.state_name
        # to.saga_id is cls.id_for(correlation_id): checked above.
        return unchanged(executor, cls, correlation_id, message, outcome, saga, state)

    if saga is None:
        return done("not_found")  # pruned, or never here: an answer starts nothing
    if saga.is_finished:
        return done("late")
    pending = pending_request(saga.timeouts, to.in_reply_to)
    if pending is None and not isinstance(message, Faulted):
        return done("late")  # timed out, answered already, or its state was left
    if saga.ignores(message):
        return done("ignored")
    if not saga.allows(message):
        if pending is None:
            # A fault of a command the saga no longer waits for (its request timed out, or
            # the saga left the state that awaited it): late, as a reply would be, instead of
            # failing until it is dead-lettered at the saga's own endpoint.
            return done("late")
        raise InvalidTransition(
            f"{cls.saga_type} {correlation_id!r} (id {saga.id}) is in state "
            f"{saga.state_name!r}, where the answer {message.type_name} is not allowed; declare "
            f"it in {cls.__name__}.ignore if it may arrive there"
        )
    if pending is not None:
        # Answered: its timeout must not fire. A row already shipped is found stale.
        timeout_id = saga.timeouts.pop(pending).message_id
        executor.execute(DELETE_TIMEOUTS, {"b_message_ids": [timeout_id]})
    return apply_step(executor, saga, message, runtime.endpoint)  # as for any message
