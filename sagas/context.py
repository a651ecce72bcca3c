"""`SagaContext`: what a saga's actions use to emit messages, collected until the saga is saved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from outbox import clock
from outbox.database import Executor
from outbox.messages import Command, Event, Message
from sagas.ids import message_id
from sagas.timeouts import Scheduled, Timeout

if TYPE_CHECKING:
    from sagas.definition import Saga

M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=Timeout)


@dataclass(frozen=True)
class Emitted:
    """A message an action emitted, with where it goes (None: published as an event)."""

    message: Message
    destination: str | None
    #: Sent with `request`: it carries a return address for the reply (`sagas.requests`).
    request: bool = False


class SagaContext:
    """Handed to every action, guard and state callback as `ctx`, with the incoming message.

    Messages are buffered and written to the outbox only once the saga row is saved, in the same
    transaction, each carrying the saga's correlation id and the incoming message as its cause.
    """

    def __init__(self, saga: Saga[Any], message: Message, session: Executor | None = None) -> None:
        self.saga = saga
        self.message = message
        #: The caller's session (or connection): business rows changed here commit with the saga.
        self.session = session
        self.transition_number = saga.version + 1
        self.emitted: list[Emitted] = []
        #: `schedule` and `cancel` calls in order: a Scheduled, or the name of a cancelled one.
        self.timer_calls: list[Scheduled | str] = []
        # How many times each timeout name was scheduled in this transition: a reschedule gets
        # an id of its own, or the inbox would drop it as a duplicate of the one it replaced.
        self._scheduled: dict[str, int] = {}

    def send(self, command: Command, *, to: str) -> Command:
        """Send `command` to the endpoint named `to`; return the message as it will be sent."""
        if not isinstance(command, Command):
            raise TypeError(f"send() takes a Command; publish() {type(command).__name__} instead")
        return self._emit(command, to)

    def publish(self, event: Event) -> Event:
        """Publish `event` to every subscriber; return the message as it will be sent."""
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event; send() {type(event).__name__} instead")
        return self._emit(event, None)

    def schedule(
        self,
        name: str,
        message: T,
        *,
        after: timedelta | None = None,
        at: datetime | None = None,
        every: timedelta | None = None,
        times: int | None = 1,
        outlive_state: bool = False,
    ) -> T:
        """Have `message` delivered back to this saga `after` a delay (or `at` a time).

        A timeout of the same name replaces the pending one. It is cancelled when the saga
        leaves the state it enters with this transition, unless `outlive_state`. With `every`,
        it repeats at that interval (first after `after`, default `every`) up to `times`
        deliveries in all (`times=None`: until cancelled).
        """
        if not isinstance(message, Timeout):
            raise TypeError(
                f"schedule() takes a Timeout message; declare "
                f"`class {type(message).__name__}(Timeout, ...)` for what the saga waits for"
            )
        if not name:
            raise ValueError("a timeout needs a name, to cancel or replace it by")
        if after is not None and at is not None:
            raise ValueError(f"timeout {name!r}: pass after= or at=, not both")
        if times is not None and times < 1:
            raise ValueError(f"timeout {name!r}: times must be at least 1 (or None)")
        if every is not None and every <= timedelta(0):
            raise ValueError(f"timeout {name!r}: every must be a positive interval")
        if at is not None:
            due = clock.ensure_aware(at, what="at")
        elif after is not None or every is not None:
            due = clock.now() + (after if after is not None else every)  # type: ignore[operator]
        else:
            raise ValueError(f"timeout {name!r}: say when, with after= or at= (or every=)")
        stamped = message.model_copy(
            update={
                "message_id": self.timeout_id(name),
                "occurred_at": due,
                "correlation_id": self.saga.correlation_id,
                "causation_id": self.message.message_id,
                "saga": self.saga.saga_type,
                "timeout": name,
            }
        )
        self.timer_calls.append(Scheduled(name, stamped, due, outlive_state, every, times))
        return stamped

    def timeout_id(self, name: str) -> uuid.UUID:
        """A fresh id for the next scheduling of timeout `name` in this transition."""
        count = self._scheduled.get(name, 0)
        self._scheduled[name] = count + 1
        return message_id(
            self.saga.incarnation,
            self.transition_number,
            self.message.message_id,
            f"timeout/{name}/{count}",
        )

    def request(self, command: Command, *, to: str, timeout: timedelta) -> Command:
        """Send `command` to `to` and await its reply for `timeout` (see `sagas.requests`).

        The receiving handler answers with `ctx.reply(...)`, which comes back to this very
        instance; without a reply in time, `RequestTimedOut[type(command)]` is delivered.
        """
        from sagas.requests import request

        return request(self, command, to=to, timeout=timeout)

    def cancel(self, name: str) -> None:
        """Cancel the pending timeout `name`, if any: it will not fire."""
        self.timer_calls.append(name)

    def _emit(self, message: M, destination: str | None, *, request: bool = False) -> M:
        index = len(self.emitted)
        stamped = message.model_copy(
            update={
                "message_id": message_id(
                    self.saga.incarnation,
                    self.transition_number,
                    self.message.message_id,
                    f"emit/{index}",
                ),
                "correlation_id": self.saga.correlation_id,
                "causation_id": self.message.message_id,
            }
        )
        self.emitted.append(Emitted(stamped, destination, request))
        return stamped
