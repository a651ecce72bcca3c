"""`SagaRuntime`: hands a message to every saga interested in it, in the caller's transaction."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.orm import Session

from outbox import clock
from outbox.database import Executor
from outbox.inbox import Inbox
from outbox.messages import Message
from outbox.sync_only import refuse_async
from sagas import ids, inbox_load, not_found, requests, stepping, store
from sagas.batch import current_batch
from sagas.definition import Saga
from sagas.errors import (
    InvalidTransition,
    MissingCorrelation,
    SagaAlreadyStarted,
    SagaDefinitionError,
    SagaNotFound,
    UnknownSagaType,
)
from sagas.outcomes import Handled, Outcome, unchanged
from sagas.timeouts import PendingTimeout, Timeout, fired_by

S = TypeVar("S", bound=Saga[Any])

#: Where `SagaRuntime` finds its per-deployment id key when none is passed.
ID_KEY_ENV = "SAGABOX_ID_KEY"


class SagaRuntime:
    """Runs saga classes: finds, creates and advances instances, and writes what they emit.

    Everything happens in the session or connection the caller passes in; nothing is committed.
    """

    def __init__(
        self,
        sagas: Iterable[type[Saga[Any]]] = (),
        *,
        endpoint: str | None = None,
        id_key: bytes | None = None,
    ) -> None:
        #: Where timeouts are addressed: the endpoint (queue) whose worker runs these sagas.
        self.endpoint = endpoint
        # A per-deployment secret for the keyed hash behind new sagas' incarnations (see
        # `sagas.ids`); without one they are derived from the starting message's random id.
        if id_key is None:
            id_key = os.environ.get(ID_KEY_ENV, "").encode() or None
        self._id_key = id_key
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
        addressed = requests.addressed_saga(self, message)  # a reply or a fault: to one saga
        if addressed is not None:
            return [self._handle_one(executor, addressed, message, addressed=True)]
        return [self._handle_one(executor, saga, message) for saga in self.targets(message)]

    def handle_new(self, session: Session, message: Message, inbox: Inbox) -> list[Handled] | None:
        """Record `message` in `inbox` and, if it is new, `handle` it; None if it was recorded
        before (a duplicate: nothing changes).

        Where the database can (`sagas.inbox_load`), the inbox insert and the read of the first
        saga row the message is for go in one statement: one round trip less per message for
        an unbatched worker. Anything that makes the saga row unknown before the inbox check
        (a reply addressed to one saga, a correlation that fails, a batch) takes the plain
        path: the inbox first, then `handle`, which then fails as it always did.
        """
        refuse_async(session, "SagaRuntime.handle_new", "await AsyncSagaRuntime(...).handle(...)")
        first = inbox_load.first_read(self, session, message)
        if first is None:
            if not inbox.record(message.message_id):
                return None
            return self.handle(session, message)
        cls, correlation_id, rest = first
        new, row = inbox_load.record_and_load(
            session, inbox, message.message_id, cls.saga_type, correlation_id
        )
        if not new:
            return None
        handled = [self._handle_one(session, cls, message, preloaded=(correlation_id, row))]
        return handled + [self._handle_one(session, saga, message) for saga in rest]

    def targets(self, message: Message) -> list[type[Saga[Any]]]:
        """The saga types `message` goes to, in the order `handle` reads them."""
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
            for cls in self.targets(message):
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
        if self._sagas.get(saga_type.saga_type) is not saga_type:
            # Started here, it would wait for messages that no worker of this runtime routes.
            known = ", ".join(sorted(self._sagas)) or "none"
            raise UnknownSagaType(
                f"this runtime does not run {saga_type.__qualname__} (its sagas: {known}): "
                f"register it (SagaRuntime(sagas=[...]) or runtime.register), or start it on "
                f"the runtime that runs it"
            )
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
        incarnation = self._incarnation(saga_type, correlation_id, message)
        saga = _new_saga(saga_type, correlation_id, incarnation)
        # _transition advances this very instance, so there is nothing to read back.
        stepping.apply_step(executor, saga, message, self.endpoint)
        return saga

    def load(self, executor: Executor, saga_type: type[S] | str, correlation_id: str) -> S | None:
        """Read a saga instance (finished or not) without changing it."""
        refuse_async(executor, "SagaRuntime.load", "await AsyncSagaRuntime(...).load(...)")
        cls = self.saga_type(saga_type) if isinstance(saga_type, str) else saga_type
        return store.load(executor, cls, correlation_id)  # type: ignore[return-value]

    def _handle_one(
        self,
        executor: Executor,
        cls: type[Saga[Any]],
        message: Message,
        *,
        addressed: bool = False,
        preloaded: tuple[str, Any] | None = None,
    ) -> Handled:
        try:
            if addressed:
                return requests.deliver(self, executor, cls, message)
            return self._handle_saga(executor, cls, message, preloaded)
        except BaseException as exc:
            batch = current_batch(executor)
            if batch is not None:
                # The instance in the batch's memory may be half changed: if the caller goes
                # on and commits, the batch refuses, and its messages are redone one by one.
                handled = f"{cls.saga_type} handled {message.type_name}"
                batch.spoil(f"{type(exc).__name__} while {handled}")
            raise

    def _handle_saga(
        self,
        executor: Executor,
        cls: type[Saga[Any]],
        message: Message,
        preloaded: tuple[str, Any] | None = None,
    ) -> Handled:
        """Advance (or create) the `cls` saga `message` is for; `preloaded` is its correlation
        id and row (None: no such saga) when `handle_new` read them with the inbox insert."""
        if preloaded is None:
            correlation_id = cls.correlate(message, _session(executor))
            saga = store.load(executor, cls, correlation_id)
        else:
            correlation_id, row = preloaded
            saga = None if row is None else store.from_row(cls, row)

        def done(outcome: Outcome, state: str | None = None) -> Handled:
            return unchanged(executor, cls, correlation_id, message, outcome, saga, state)

        if saga is None:
            if isinstance(message, Timeout):
                return done("stale")  # timeouts never start a saga
            if message.type_name not in cls.starting_triggers:
                if not_found.handled(cls, executor, message):
                    return done("not_found")
                raise SagaNotFound(
                    f"{cls.saga_type} {correlation_id!r} (id {cls.id_for(correlation_id)}) does "
                    f"not exist, and {message.type_name} does not start it",
                    cls.on_not_found,
                )
            saga = _new_saga(cls, correlation_id, self._incarnation(cls, correlation_id, message))
        elif saga.is_finished:
            # A tombstone: the message is late, not the start of a new saga.
            return done("late", saga.state_name)

        fired_timeout: PendingTimeout | None = None
        if isinstance(message, Timeout):
            fired_timeout = fired_by(saga.timeouts, message)
            if fired_timeout is None:
                return done("stale", saga.state_name)
        if saga.ignores(message):
            if fired_timeout is None:
                return done("ignored", saga.state_name)
            # It fired, into a state that ignores it: it leaves the pending set all the same
            # (and a repeating one goes on), or the saga would wait for it forever.
            return stepping.apply_step(
                executor, saga, message, self.endpoint, fired_timeout, fire=False
            )
        if not saga.allows(message):
            raise InvalidTransition(
                f"{cls.saga_type} {correlation_id!r} (id {saga.id}) is in state "
                f"{saga.state_name!r}, where {message.type_name} is not allowed; declare it in "
                f"{type(saga).__name__}.ignore if it may arrive there"
            )
        return stepping.apply_step(executor, saga, message, self.endpoint, fired_timeout)

    def _incarnation(self, cls: type[Saga[Any]], correlation_id: str, message: Message) -> UUID:
        return ids.incarnation(cls.saga_type, correlation_id, message.message_id, self._id_key)


def _new_saga(cls: type[S], correlation_id: str, incarnation: UUID) -> S:
    """A saga not yet stored, in its initial state with default data (version 0)."""
    now = clock.now()
    return cls(
        correlation_id=correlation_id,
        incarnation=incarnation,
        state=cls.initial_state,
        data=cls.data_type(),
        version=0,
        created_at=now,
        updated_at=now,
    )


def _session(executor: Executor) -> Session | None:
    return executor if isinstance(executor, Session) else None
