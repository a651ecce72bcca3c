"""`Outbox`: writes outgoing messages as rows in the caller's transaction, never committing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import insert

from outbox import clock, signals, tracing
from outbox.database import Executor, dialect_of
from outbox.envelope import H_MESSAGE_ID, Envelope, encode
from outbox.errors import MessageTooLarge, UnstorableText
from outbox.limits import check_size, shown, text_problem
from outbox.messages import Command, Event, Message
from outbox.sync_only import refuse_async
from outbox.tables import outbox_messages

# Built once and given its values as parameters: a `.values(...)` statement per message cost
# 5% of a business transaction that writes one row and one message (pyinstrument, bench/).
_INSERT = insert(outbox_messages)


class Outbox:
    """Adds messages to the outbox table inside the caller's session or connection.

    The rows commit or roll back with the caller's business rows; the relay ships them later.
    Commands go to one endpoint (`destination` is required); events are published under their
    type name unless a destination is given.
    """

    def __init__(self, executor: Executor, *, into: list[dict[str, Any]] | None = None) -> None:
        """`into`: collect the rows in this list instead of inserting each at once; the caller
        then inserts them, in order, with one `write_rows` before its commit (a batch does)."""
        refuse_async(executor, "Outbox(session)", "await AsyncOutbox(session).add(message)")
        self._executor = executor
        self._into = into
        dialect_of(executor)  # refuse an unsupported database now, not at commit time

    def add(
        self,
        message: Message,
        *,
        destination: str | None = None,
        partition_key: str | None = None,
        deliver_at: datetime | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UUID:
        """Insert `message` for delivery at `deliver_at` (default: now) and return its id.

        `partition_key` keeps messages in order per key (a saga uses its correlation id); it
        defaults to the message's correlation id.
        """
        self._insert(self.row(message, destination, partition_key, deliver_at, headers))
        return message.message_id

    def row(
        self,
        message: Message,
        destination: str | None = None,
        partition_key: str | None = None,
        deliver_at: datetime | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The `outbox_messages` row `add` would insert, checked the same way but not written:
        for a writer that sends it in one statement with other rows (a new saga's, say); it
        then calls `written` after the statement."""
        extra = dict(headers or {})
        tracing.inject(extra)
        envelope = encode(message, extra_headers=extra)
        # New messages only: a retry adds its own headers to an envelope written here once
        # (some 100 bytes), and must not be refused for them.
        _check_headers_size(envelope.headers, envelope.type)
        return self._envelope_row(
            envelope,
            destination=_destination(message, destination),
            partition_key=partition_key if partition_key is not None else message.correlation_id,
            deliver_at=deliver_at,
        )

    def written(self) -> None:
        """Tell listeners (the relay's wake-up) that rows from `row` went into this transaction."""
        signals.mark_written(self._executor)

    def add_envelope(
        self,
        envelope: Envelope,
        *,
        destination: str,
        partition_key: str | None,
        deliver_at: datetime | None = None,
    ) -> None:
        """Insert an already encoded message: a retry, a replayed dead letter, a timeout.

        The envelope goes out byte for byte as given, to the routing key `destination`.
        Raises `MessageTooLarge` over the size limit (see `outbox.limits`), so the caller learns
        now, in its own transaction, what no relay or worker could deliver.
        """
        self._insert(self._envelope_row(envelope, destination, partition_key, deliver_at))

    def _envelope_row(
        self,
        envelope: Envelope,
        destination: str,
        partition_key: str | None,
        deliver_at: datetime | None,
    ) -> dict[str, Any]:
        check_size(
            envelope.payload,
            what=f"{envelope.type} message {envelope.headers.get(H_MESSAGE_ID)}",
        )
        _check_text(envelope.type, "type")
        _check_text(destination, "destination")
        for name, value in envelope.headers.items():
            _check_header(name, value)
        if partition_key is not None:
            _check_text(partition_key, "partition_key")
        now = clock.now()
        available_at = (
            now if deliver_at is None else clock.ensure_aware(deliver_at, what="deliver_at")
        )
        return {
            "message_id": envelope.message_id,
            "type": envelope.type,
            "destination": destination,
            "partition_key": partition_key,
            "payload": envelope.payload,
            "headers": envelope.headers,
            "available_at": available_at,
            "attempts": 0,
            "created_at": now,
        }

    def _insert(self, row: dict[str, Any]) -> None:
        if self._into is not None:
            self._into.append(row)  # a batch writes them all at its commit (`write_rows`)
        else:
            write_rows(self._executor, [row])


def write_rows(executor: Executor, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows an `Outbox(executor, into=...)` collected, in their order, in one go (the
    driver sends many rows as one batch): their ids, and so their delivery order, follow it."""
    if rows:
        executor.execute(_INSERT, dict(rows[0]) if len(rows) == 1 else list(rows))
        signals.mark_written(executor)


#: The longest type, destination or partition key, in characters: their columns' length.
MAX_TEXT: int = outbox_messages.c.partition_key.type.length  # type: ignore[attr-defined]


def _check_text(value: str, what: str) -> None:
    """Refuse, now and by name, a value its column cannot hold: on PostgreSQL it would fail the
    caller's commit with a database error (SQLite would store it, and the two must agree).
    A `ValueError` (`UnstorableText`), which a worker dead-letters at once: retrying the
    message would emit the same value again."""
    problem = text_problem(value, MAX_TEXT)
    if problem is not None:
        raise UnstorableText(
            f"{what} {shown(value)} {problem}; the outbox "
            f"stores text of at most {MAX_TEXT} characters without NUL: pass a shorter one "
            "(a hash of a long key keeps its order just as well)"
        )


#: The longest header name AMQP carries, in UTF-8 bytes (a short string's length is one byte).
MAX_HEADER_NAME_BYTES = 255


def _check_header(name: str, value: object) -> None:
    """Refuse a header that PostgreSQL's JSONB cannot hold (a NUL, which SQLite stores) or a
    broker cannot carry (a name past 255 bytes: py-amqp cannot encode it, so no relay could
    publish the row), as `UnstorableText`, which a worker dead-letters at once."""
    if "\x00" in name or (isinstance(value, str) and "\x00" in value):
        raise UnstorableText(
            f"header {name[:80]!r} holds a NUL character, which the outbox "
            "cannot store: leave it out, or encode the value (base64, say)"
        )
    if len(name) * 4 > MAX_HEADER_NAME_BYTES:  # UTF-8 takes at most 4 bytes a character
        size = len(name.encode("utf-8", "surrogatepass"))
        if size > MAX_HEADER_NAME_BYTES:
            raise UnstorableText(
                f"header name {shown(name)} is {size} bytes "
                f"long; AMQP carries header names of at most {MAX_HEADER_NAME_BYTES} bytes "
                "(UTF-8): pass a shorter one"
            )


#: The most a message's headers may take, encoded: AMQP carries them in one frame, and a
#: broker closes the connection over a bigger one (RabbitMQ's frames are 128 KiB by default,
#: and may be set as low as 4 KiB); sagabox's own headers take a few hundred bytes, and a
#: retry adds some 100 bytes to those of the message it retries.
MAX_HEADERS_BYTES = 16 * 1024


def _check_headers_size(headers: Mapping[str, object], type_name: str) -> None:
    """Refuse headers no broker frame may hold, as `MessageTooLarge`, which a worker
    dead-letters at once: no relay could publish the row."""
    # A header costs its name and value in UTF-8 (at most 4 bytes a character) and 6 more.
    if sum(len(n) + len(str(v)) for n, v in headers.items()) * 4 + 6 * len(headers) <= (
        MAX_HEADERS_BYTES
    ):
        return
    size = sum(
        len(n.encode("utf-8", "surrogatepass")) + len(str(v).encode("utf-8", "surrogatepass")) + 6
        for n, v in headers.items()
    )
    if size > MAX_HEADERS_BYTES:
        raise MessageTooLarge(
            f"the headers of a {type_name} message take {size} bytes, over the "
            f"{MAX_HEADERS_BYTES} an AMQP frame is sure to carry: put large data in the "
            "message itself, or send a reference to it"
        )


def _destination(message: Message, destination: str | None) -> str:
    if destination:
        return destination
    if isinstance(message, Event):
        return message.type_name
    kind = "commands" if isinstance(message, Command) else "messages that are not events"
    raise ValueError(
        f"{message.type_name}: {kind} go to one endpoint; pass destination='<endpoint name>'"
    )
