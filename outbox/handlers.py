"""Plain message handlers: functions marked `@handles(SomeEvent)`, the choreography participants.

A handler receives a `HandlerContext` (the transaction's session, and `send`/`publish` into the
outbox of that transaction) and the message. It runs in the worker's transaction together with
the inbox record, so its business rows and its outgoing messages commit once or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from outbox.errors import OutboxError
from outbox.messages import Command, Event, Message
from outbox.return_address import return_address, wire_headers
from outbox.sync_only import is_coroutine_callable
from outbox.writer import Outbox

F = TypeVar("F", bound=Callable[..., object])
M = TypeVar("M", bound=Message)

_MARK = "__sagabox_handles__"
# Ids of messages a handler emits derive from (handler, incoming message, index), like a saga's:
# a handler re-run after a rollback emits the same ids.
_MESSAGE_IDS = uuid.UUID("3d1f5c52-8e0b-4b7e-9a55-6f0f4c1e2d90")


class ReplyImpossible(OutboxError):
    """`ctx.reply` was called for a message that was not sent as a request."""


def handles(*message_types: type[Message]) -> Callable[[F], F]:
    """Mark a function `(ctx, message) -> None` as the handler of these message types."""
    if not message_types:
        raise TypeError("@handles needs at least one message class, e.g. @handles(OrderPlaced)")
    for message_type in message_types:
        if not (isinstance(message_type, type) and issubclass(message_type, Message)):
            raise TypeError(f"@handles takes message classes, not {message_type!r}")
        if not message_type.type_name:
            raise TypeError(f"{message_type.__qualname__} is abstract and is never delivered")

    def mark(func: F) -> F:
        refuse_coroutine_handler(func, "@handles")
        setattr(func, _MARK, (*getattr(func, _MARK, ()), *message_types))
        return func

    return mark


def refuse_coroutine_handler(func: Callable[..., object], where: str) -> None:
    """Refuse an `async def` handler where it is declared, saying what to write instead."""
    if is_coroutine_callable(func):
        raise TypeError(
            f"{where}: {handler_name(func)} is `async def`, but the worker calls handlers "
            "synchronously inside its transaction, so its coroutine would never run while "
            "the inbox marked the message done. Write it as a plain `def` using ctx.session "
            "and ctx.send/ctx.publish; do remote async I/O outside the transaction, e.g. in "
            "an endpoint of its own that reports back with a message"
        )


def handled_types(func: Callable[..., object]) -> tuple[type[Message], ...]:
    """The message types `func` was marked with; an unmarked function is an error."""
    types: tuple[type[Message], ...] = getattr(func, _MARK, ())
    if not types:
        raise TypeError(
            f"{getattr(func, '__qualname__', func)!r} is not a handler: decorate it with "
            "@handles(SomeMessage)"
        )
    return types


def handler_name(func: Callable[..., object]) -> str:
    """A stable name for a handler: its module and qualified name."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class HandlerContext:
    """Handed to a handler with the message: the session, and the outbox of its transaction."""

    def __init__(self, session: Session, message: Message, handler: str) -> None:
        self.session = session
        self.message = message
        self._handler = handler
        self._outbox = Outbox(session)
        self._emitted = 0

    def send(self, command: Command, *, to: str) -> Command:
        """Send `command` to the endpoint named `to`, caused by the message being handled."""
        if not isinstance(command, Command):
            raise TypeError(f"send() takes a Command; publish() {type(command).__name__} instead")
        stamped = self._stamp(command)
        self._outbox.add(stamped, destination=to)
        return stamped

    def publish(self, event: Event) -> Event:
        """Publish `event` to every subscriber, caused by the message being handled."""
        if not isinstance(event, Event):
            raise TypeError(f"publish() takes an Event; send() {type(event).__name__} instead")
        stamped = self._stamp(event)
        self._outbox.add(stamped)
        return stamped

    def reply(self, message: Message) -> Message:
        """Answer the request being handled (sent with a saga's `ctx.request`): `message` goes
        back to the endpoint and saga instance that sent it, whatever its correlation."""
        address = return_address(wire_headers(self.message), "reply")
        if address is None:
            raise ReplyImpossible(
                f"{self.message.type_name} {self.message.message_id} was not sent as a request "
                "(a saga's ctx.request), so it names nobody to reply to: send() or publish() "
                "the answer instead"
            )
        stamped = self._stamp(message)
        self._outbox.add(
            stamped,
            destination=address.endpoint,
            headers=address.headers_for_answer(self.message.message_id),
        )
        return stamped

    def _stamp(self, message: M) -> M:
        index, self._emitted = self._emitted, self._emitted + 1
        update: dict[str, Any] = {
            "message_id": uuid.uuid5(
                _MESSAGE_IDS, f"{self._handler}/{self.message.message_id}/{index}"
            ),
            "causation_id": self.message.message_id,
            "correlation_id": self.message.correlation_id or message.correlation_id,
        }
        return message.model_copy(update=update)
