"""`SagaContext`: what a saga's actions use to emit messages, collected until the saga is saved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from outbox.messages import Command, Event, Message

if TYPE_CHECKING:
    from sagas.definition import Saga

M = TypeVar("M", bound=Message)

# Outgoing ids are derived from (saga id, transition number, index): a re-run of the same
# transition after a crash emits the same ids, and downstream inboxes drop the duplicates.
_MESSAGE_IDS = uuid.UUID("0c6f2b0e-5a43-4f4e-8f44-2f3d61b8c7a1")


@dataclass(frozen=True)
class Emitted:
    """A message an action emitted, with where it goes (None: published as an event)."""

    message: Message
    destination: str | None


class SagaContext:
    """Handed to every action, guard and state callback as `ctx`, with the incoming message.

    Messages are buffered and written to the outbox only once the saga row is saved, in the same
    transaction, each carrying the saga's correlation id and the incoming message as its cause.
    """

    def __init__(self, saga: Saga[Any], message: Message) -> None:
        self.saga = saga
        self.message = message
        self.transition_number = saga.version + 1
        self.emitted: list[Emitted] = []

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

    def _emit(self, message: M, destination: str | None) -> M:
        index = len(self.emitted)
        stamped = message.model_copy(
            update={
                "message_id": uuid.uuid5(
                    _MESSAGE_IDS, f"{self.saga.id}/{self.transition_number}/{index}"
                ),
                "correlation_id": self.saga.correlation_id,
                "causation_id": self.message.message_id,
            }
        )
        self.emitted.append(Emitted(stamped, destination))
        return stamped
