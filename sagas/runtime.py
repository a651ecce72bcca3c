"""`SagaRuntime`: hands a message to every saga interested in it, in the caller's transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from uuid import UUID

from sqlalchemy import delete
from sqlalchemy.orm import Session

from outbox import clock
from outbox.database import Executor
from outbox.messages import Message
from outbox.sync_only import refuse_async
from outbox.tables import outbox_messages
from outbox.writer import Outbox
from sagas import store
from sagas.batch import current_batch
from sagas.context import SagaContext
from sagas.definition import Saga
from sagas.errors import (
    ConcurrencyConflict,
    InvalidTransition,
    MissingCorrelation,
    SagaAlreadyStarted,
    SagaDefinitionError,
    SagaNotFound,
    UnknownSagaType,
)
from sagas.timeouts import PendingTimeout, Scheduled, Timeout

S = TypeVar("S", bound=Saga[Any])

#: What a message did to one saga; also the journal's `outcome` column.
Outcome = Literal["transition", "unchanged", "ignored", "late", "not_found", "stale"]


@dataclass(frozen=True)
class Handled:
    """The result of one message for one saga type."""

    saga_type: str
    saga_id: UUID
    correlation_id: str
    outcome: Outcome
    from_state: str | None = None
    to_state: str | None = None
    version: int | None = None


class SagaRuntime:
    """Runs saga classes: finds, creates and advances instances, and writes what they emit.

    Everything happens in the session or connection the caller passes in; nothing is committed.
    """

    def __init__(
        self, sagas: Iterable[type[Saga[Any]]] = (), *, endpoint: str | None = None
    ) -> None:
        #: Where timeouts are addressed: the endpoint (queue) whose worker runs these sagas.
        self.endpoint = endpoint
        self._sagas: dict[str, type[Saga[Any]]] = {}
        self._by_trigger: dict[str, list[type[Saga[Any]]]] = defaultdict(list)
        for saga_type in sagas:
            self.register(saga_type)

    def register(self, saga_type: type[Saga[Any]]) -> None:
        """Add a saga class; its type name must be unique in this runtime."""
        known = self._sagas.get(saga_type.saga_type)
        if known is not None and known is not saga_type:
            raise SagaDefinitionError(
                f"saga type {saga_type.saga_type!r} is claimed by {known.__qualname__} and "
                f"{saga_type.__qualname__}: pass name= to one of them"
            )
        self._sagas[saga_type.saga_type] = saga_type
        for trigger in saga_type.message_types:
            if saga_type not in self._by_trigger[trigger]:
                self._by_trigger[trigger].append(saga_type)

    @property
    def sagas(self) -> list[type[Saga[Any]]]:
        """The registered saga classes."""
        return list(self._sagas.values())

    def saga_type(self, name: str) -> type[Saga[Any]]:
        """The saga class registered as `name`."""
        try:
            return self._sagas[name]
        except KeyError:
            raise UnknownSagaType(
                f"no saga type {name!r} is registered (known: {', '.join(sorted(self._sagas))})"
            ) from None

    def interested_in(self, message: Message | type[Message]) -> list[type[Saga[Any]]]:
        """The saga classes that handle this message type."""
        return self.interested_in_type(message.type_name)

    def interested_in_type(self, type_name: str) -> list[type[Saga[Any]]]:
        """The saga classes that handle the message type named `type_name`."""
        return list(self._by_trigger.get(type_name, ()))

    def message_type_names(self) -> set[str]:
        """Every message type some registered saga handles."""
        return {name for name, sagas in self._by_trigger.items() if sagas}

    def handle(self, executor: Executor, message: Message) -> list[Handled]:
        """Deliver `message` to every interested saga; return what it did to each."""
        refuse_async(executor, "SagaRuntime.handle", "await AsyncSagaRuntime(...).handle(...)")
        return [self._handle_one(executor, saga, message) for saga in self._targets(message)]

    def _targets(self, message: Message) -> list[type[Saga[Any]]]:
        sagas = self.interested_in(message)
        if isinstance(message, Timeout):
            # A timeout goes back only to the saga type that scheduled it.
            sagas = [saga for saga in sagas if saga.saga_type == message.saga]
        return sagas

    def begin_batch(self, session: Session, messages: Iterable[Message]) -> None:
        """Handle the next `messages` in this transaction as one batch: lock and read every
        saga row they will touch in one statement, and write the changes back in one statement
        each just before the commit (see `sagas.batch`)."""
        refuse_async(session, "SagaRuntime.begin_batch", "one message at a time with aio")
        # Handling correlates each message again: a lookup may depend on what an earlier
        # message of the batch wrote, so these keys only serve to lock and read ahead.
        keys: list[tuple[str, str]] = []
        for message in messages:
            for cls in self._targets(message):
                try:
                    keys.append((cls.saga_type, cls.correlate(message, session)))
                except MissingCorrelation:
                    continue  # handling it raises the real error
        store.lock_and_load(session, keys)

    def start(self, executor: Executor, saga_type: type[S], message: Message) -> S:
        """Create a saga from `message` (from a web request handler, say) and return it.

        Raises `SagaAlreadyStarted` if it exists, and `InvalidTransition` if `message` does
        not start this saga.
        """
        refuse_async(executor, "SagaRuntime.start", "await AsyncSagaRuntime(...).start(...)")
        correlation_id = saga_type.correlate(message, _session(executor))
        if message.type_name not in saga_type.starting_triggers:
            raise InvalidTransition(
                f"{saga_type.saga_type} {correlation_id!r}: {message.type_name} does not start "
                f"this saga (it starts with: {', '.join(sorted(saga_type.starting_triggers))})"
            )
        existing = store.load(executor, saga_type, correlation_id)
        if existing is not None:
            raise SagaAlreadyStarted(
                f"{saga_type.saga_type} {correlation_id!r} (id {existing.id}) already exists, "
                f"in state {existing.state_name!r}"
            )
        saga = _new_saga(saga_type, correlation_id)
        # _transition advances this very instance, so there is nothing to read back.
        self._transition(executor, saga, message)
        return saga

    def load(self, executor: Executor, saga_type: type[S] | str, correlation_id: str) -> S | None:
        """Read a saga instance (finished or not) without changing it."""
        refuse_async(executor, "SagaRuntime.load", "await AsyncSagaRuntime(...).load(...)")
        cls = self.saga_type(saga_type) if isinstance(saga_type, str) else saga_type
        return store.load(executor, cls, correlation_id)  # type: ignore[return-value]

    def _handle_one(self, executor: Executor, cls: type[Saga[Any]], message: Message) -> Handled:
        try:
            return self._handle_saga(executor, cls, message)
        except BaseException as exc:
            batch = current_batch(executor)
            if batch is not None:
                # The instance in the batch's memory may be half changed: if the caller goes
                # on and commits, the batch refuses, and its messages are redone one by one.
                handled = f"{cls.saga_type} handled {message.type_name}"
                batch.spoil(f"{type(exc).__name__} while {handled}")
            raise

    def _handle_saga(self, executor: Executor, cls: type[Saga[Any]], message: Message) -> Handled:
        correlation_id = cls.correlate(message, _session(executor))
        saga = store.load(executor, cls, correlation_id)

        def done(outcome: Outcome, state: str | None = None) -> Handled:
            store.journal(
                executor, cls, correlation_id, message, outcome, from_state=state, to_state=state
            )
            return Handled(
                cls.saga_type, cls.id_for(correlation_id), correlation_id, outcome, state, state
            )

        if saga is None:
            if isinstance(message, Timeout):
                return done("stale")  # timeouts never start a saga
            if message.type_name not in cls.starting_triggers:
                if cls.on_not_found == "ignore":
                    return done("not_found")
                raise SagaNotFound(
                    f"{cls.saga_type} {correlation_id!r} (id {cls.id_for(correlation_id)}) does "
                    f"not exist, and {message.type_name} does not start it",
                    cls.on_not_found,
                )
            saga = _new_saga(cls, correlation_id)
        elif saga.is_finished:
            # A tombstone: the message is late, not the start of a new saga.
            return done("late", saga.state_name)

        fired_timeout: PendingTimeout | None = None
        if isinstance(message, Timeout):
            fired_timeout = saga.timeouts.get(message.timeout)
            if fired_timeout is None or fired_timeout.message_id != message.message_id:
                # Cancelled, replaced, or set in a state the saga has left: never fired.
                return done("stale", saga.state_name)
        if saga.ignores(message):
            return done("ignored", saga.state_name)
        if not saga.allows(message):
            raise InvalidTransition(
                f"{cls.saga_type} {correlation_id!r} (id {saga.id}) is in state "
                f"{saga.state_name!r}, where {message.type_name} is not allowed; declare it in "
                f"{type(saga).__name__}.ignore if it may arrive there"
            )
        return self._transition(executor, saga, message, fired_timeout)

    def _transition(
        self,
        executor: Executor,
        saga: Saga[Any],
        message: Message,
        fired_timeout: PendingTimeout | None = None,
    ) -> Handled:
        cls = type(saga)
        before, expected_version = saga.state_name, saga.version
        ctx = SagaContext(saga, message, executor)
        if fired_timeout is not None:
            assert isinstance(message, Timeout)
            del saga.timeouts[message.timeout]
            _repeat(ctx, message, fired_timeout)
        fired = saga.fire(ctx, message)
        saga.version += 1
        saga.updated_at = clock.now()
        if saga.state_name in cls.final_states:
            saga.finished_at = saga.updated_at
        dropped = self._settle_timeouts(saga, before, ctx)
        if expected_version == 0:
            saved = store.create(executor, saga)
        else:
            saved = store.save(executor, saga, expected_version=expected_version)
        if not saved:
            raise ConcurrencyConflict(
                f"{cls.saga_type} {saga.correlation_id!r} (id {saga.id}, state {before!r}) was "
                f"{'created' if expected_version == 0 else 'changed'} by another transaction "
                f"while handling {message.type_name}; retry the message"
            )
        outcome: Outcome = "transition" if fired else "unchanged"
        store.journal(
            executor,
            cls,
            saga.correlation_id,
            message,
            outcome,
            from_state=before,
            to_state=saga.state_name,
            version=saga.version,
        )
        outbox = Outbox(executor)
        for emitted in ctx.emitted:
            outbox.add(
                emitted.message,
                destination=emitted.destination,
                partition_key=saga.correlation_id,
            )
        if dropped:
            # Tidiness only: a row already shipped would be found stale on arrival anyway.
            executor.execute(
                delete(outbox_messages).where(outbox_messages.c.message_id.in_(dropped))
            )
        for call in ctx.timer_calls:
            if not isinstance(call, Scheduled):
                continue
            pending = saga.timeouts.get(call.name)
            # Written only if it survived the transition's later cancel or replace calls.
            if pending is not None and pending.message_id == call.message.message_id:
                outbox.add(
                    call.message,
                    destination=self._timeout_endpoint(cls),
                    partition_key=saga.correlation_id,
                    deliver_at=call.due_at,
                )
        return Handled(
            cls.saga_type,
            saga.id,
            saga.correlation_id,
            outcome,
            before,
            saga.state_name,
            saga.version,
        )

    def _settle_timeouts(self, saga: Saga[Any], before: str, ctx: SagaContext) -> list[UUID]:
        """Apply the transition's schedule/cancel calls and drop timeouts that no longer apply.

        Returns the message ids of the dropped ones. A timeout belongs to the state the saga is
        in after the transition that scheduled it; leaving that state drops it (unless it was
        scheduled to outlive it), and finishing drops them all.
        """
        dropped: list[UUID] = []

        def drop(name: str) -> None:
            pending = saga.timeouts.pop(name, None)
            if pending is not None:
                dropped.append(pending.message_id)

        now_state = saga.state_name
        if saga.is_finished:
            for name in list(saga.timeouts):
                drop(name)
            return dropped
        if now_state != before:
            for name, pending in list(saga.timeouts.items()):
                if pending.state != now_state and not pending.outlive_state:
                    drop(name)
        for call in ctx.timer_calls:
            if isinstance(call, str):
                drop(call)
                continue
            drop(call.name)
            state = call.state or now_state
            if state != now_state and not call.outlive_state:
                continue  # a repetition of a timeout whose state was just left
            saga.timeouts[call.name] = _pending(call, state)
        return dropped

    def _timeout_endpoint(self, cls: type[Saga[Any]]) -> str:
        if not self.endpoint:
            raise SagaDefinitionError(
                f"{cls.saga_type} scheduled a timeout, but this runtime has no endpoint to "
                "address it to: create it as SagaRuntime(..., endpoint='<queue name>'), or run "
                "the saga in a sagabox.App"
            )
        return self.endpoint


def _pending(call: Scheduled, state: str) -> PendingTimeout:
    return PendingTimeout(
        message_id=call.message.message_id,
        state=state,
        due_at=call.due_at,
        outlive_state=call.outlive_state,
        every=call.every,
        remaining=call.remaining,
    )


def _repeat(ctx: SagaContext, message: Timeout, fired: PendingTimeout) -> None:
    """Schedule the next delivery of a repeating timeout, in the state that set it."""
    remaining = None if fired.remaining is None else fired.remaining - 1
    if fired.every is None or remaining == 0:
        return
    due = fired.due_at + fired.every  # from the schedule, not from now: no drift
    ctx.timer_calls.append(
        Scheduled(
            message.timeout,
            message.model_copy(
                update={
                    "message_id": uuid.uuid5(fired.message_id, "next"),
                    "occurred_at": due,
                    "causation_id": message.message_id,
                }
            ),
            due,
            fired.outlive_state,
            fired.every,
            remaining,
            fired.state,
        )
    )


def _new_saga(cls: type[S], correlation_id: str) -> S:
    """A saga not yet stored, in its initial state with default data (version 0)."""
    now = clock.now()
    return cls(
        correlation_id=correlation_id,
        state=cls.initial_state,
        data=cls.data_type(),
        version=0,
        created_at=now,
        updated_at=now,
    )


def _session(executor: Executor) -> Session | None:
    return executor if isinstance(executor, Session) else None
