"""Publishing claimed outbox rows and learning, row by row, what the broker did with each one.

On RabbitMQ the channel is in confirm mode and a batch is published before waiting: the broker
acknowledges many delivery tags at once, so a batch costs one round trip, not one per message;
its frames go to the socket in few writes, not one per message (`relay.coalesced_writes`),
and are encoded here rather than by py-amqp where a row has the usual shape
(`relay.publish_frames`).
A batch holding several rows of one partition key goes out in as many rounds: a key never has
two rows in flight, so when one fails the next is not yet sent and waits (per-key order).
Each row then ends in one of four ways: confirmed; returned (addressed to an endpoint with no
queue bound: published `mandatory`); nacked (a queue refused it, e.g. `x-overflow=reject-publish`);
or refused, when the broker closes the channel over it (PRECONDITION_FAILED, e.g. bigger than its
`max_message_size`). Only a lost connection or a confirm timeout fails the whole batch.

A refusal loses the confirms still in flight on that channel, so a message bigger than one
frame is published on its own (one more round trip), and after any other refusal the rows whose
fate is unknown are published again one at a time until the culprit is found. The rows sent
again may reach their queue twice; the consumers' inbox drops the copy.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from kombu import Connection
from kombu.transport import virtual

from outbox.claim import OutboxRow
from outbox.envelope import CONTENT_TYPE
from relay.broker import topic_exchange, uses_confirms
from relay.coalesced_writes import coalesced_writes
from relay.publish_frames import PublishFrames

#: A message bigger than this goes out alone: if the broker refuses it, nothing else is in flight.
ALONE_ABOVE = 64 * 1024
#: How a row can fail: no queue bound, a queue refused it, the broker closed the channel over
#: it, or it cannot be encoded at all.
FAILURE_KINDS = ("unroutable", "nacked", "refused", "unencodable")
#: AMQP's reply code when the broker refuses one message by closing the channel.
_PRECONDITION_FAILED = 406
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


class BrokerRefused(ConnectionError):
    """The broker refused a message (kept for code that catches it: a refused row is now a
    `Failure` of its batch, retried alone and dead-lettered at last, never an exception)."""


class ConfirmTimeout(ConnectionError):
    """The broker did not confirm the batch in time; the batch is rolled back and retried."""


@dataclass(frozen=True)
class Failure:
    """A row the broker did not take, why, and whether trying again can help."""

    row: OutboxRow
    #: One of `FAILURE_KINDS`.
    kind: str
    reason: str
    retryable: bool = True


@dataclass
class Outcome:
    """What became of each row of a batch."""

    #: The broker has these: delete them.
    confirmed: list[OutboxRow] = field(default_factory=list)
    #: The broker did not take these: retry them later, or dead-letter them.
    failed: list[Failure] = field(default_factory=list)
    #: Not sent, because an older row of their partition key failed in this batch: they stay.
    held: list[OutboxRow] = field(default_factory=list)


def refuses_the_message(error: BaseException) -> bool:
    """Whether a channel error means "this message is bad" rather than "the broker is unwell".

    RabbitMQ closes the channel with PRECONDITION_FAILED over one message (too big, bad
    properties); anything else (no such exchange, access refused, a lost connection) concerns
    every message alike, so the batch is rolled back and retried after a backoff.
    """
    return getattr(error, "reply_code", None) == _PRECONDITION_FAILED


class Publisher:
    """Publishes rows on one channel of `connection`; discard it after an exception."""

    def __init__(
        self, connection: Connection, exchange: str, *, confirm_timeout: float = 30.0
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._confirm_timeout = confirm_timeout
        connection.ensure_connection(max_retries=0)  # our own backoff retries
        self._confirms = uses_confirms(connection)
        self._channel_errors = tuple(connection.channel_errors)
        self._outstanding: deque[int] = deque()
        self._settled: dict[int, bool] = {}  # delivery tag -> nacked
        self._returned: set[str] = set()
        self._next_tag = 1
        self._channel: Any = None
        self._open_channel()

    def publish(self, rows: Sequence[OutboxRow]) -> Outcome:
        """Publish `rows` in order and report what the broker did with each.

        Raises only when the broker connection fails or does not confirm in time: then nothing
        is known about the rows, and the caller rolls the batch back.
        """
        outcome = Outcome()
        failed_keys: set[str] = set()
        queue = deque(rows)
        alone = 0  # how many of the next rows go one at a time, to find a refused one
        while queue:
            segment = [queue.popleft()] if alone else _segment(queue)
            alone = max(alone - 1, 0)
            unknown, error = self._send(segment, outcome, failed_keys)
            if len(unknown) == 1:
                reason = f"refused by the broker: {error}"
                _fail(outcome, failed_keys, unknown[0], "refused", reason)
                alone = 0
            elif unknown:
                queue.extendleft(reversed(unknown))
                alone = len(unknown)
        return outcome

    def close(self) -> None:
        """Close the channel; the connection stays the caller's."""
        # Closing after a failure may fail again; there is nothing left to do about it.
        with contextlib.suppress(Exception):
            self._channel.close()

    def _open_channel(self) -> None:
        self._channel = self._connection.channel()
        topic_exchange(self._exchange_name)(self._channel).declare()
        self._virtual = isinstance(self._channel, virtual.Channel)
        self._frames: PublishFrames | None = None
        if not self._virtual:
            self._frames = PublishFrames(
                self._channel.channel_id, self._channel.connection.frame_max, self._exchange_name
            )
        self._next_tag = 1
        if self._confirms:
            self._channel.confirm_select()
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)
            self._channel.events["basic_return"].add(self._on_return)

    def _send(
        self, rows: Iterable[OutboxRow], outcome: Outcome, failed_keys: set[str]
    ) -> tuple[list[OutboxRow], str]:
        """Publish `rows` and sort them into `outcome`; return the rows a refusal left unknown."""
        sent: list[tuple[int, OutboxRow, str]] = []
        self._settled.clear()
        self._returned.clear()
        with coalesced_writes(self._connection) if not self._virtual else _NOTHING:
            self._publish_rows(rows, outcome, failed_keys, sent)
        error = self._wait_for_confirms() if sent else None
        unknown: list[OutboxRow] = []
        returned = self._returned
        for tag, row, message_id in sent:
            if returned and message_id in returned:
                # The broker sends a return before the ack of the same message.
                _fail(outcome, failed_keys, row, "unroutable", self._unroutable(row))
            elif self._settled.get(tag):
                reason = "nacked by the broker: a queue it routes to refused it (full, with "
                reason += "x-overflow=reject-publish, or failing)"
                _fail(outcome, failed_keys, row, "nacked", reason)
            elif tag in self._settled:
                outcome.confirmed.append(row)
            else:
                unknown.append(row)
        return unknown, error or ""

    def _publish_rows(
        self,
        rows: Iterable[OutboxRow],
        outcome: Outcome,
        failed_keys: set[str],
        sent: list[tuple[int, OutboxRow, str]],
    ) -> None:
        for row in rows:
            if row.partition_key is not None and row.partition_key in failed_keys:
                outcome.held.append(row)
                continue
            mandatory = row.destination != row.type  # addressed to an endpoint, not an event
            if self._virtual and not self._routes(row.destination):
                # What RabbitMQ does with `mandatory`, done by hand for kombu's own transports.
                if mandatory:
                    _fail(outcome, failed_keys, row, "unroutable", self._unroutable(row))
                else:
                    outcome.confirmed.append(row)  # an event nobody subscribes to is done
                continue
            message_id = str(row.message_id)  # once: it is also how a return names the row
            try:
                self._publish_one(row, mandatory, message_id)
            except (UnicodeError, ValueError, TypeError, struct.error) as exc:
                # Raised while encoding, before a byte went out: this row can never be sent.
                # struct.error: a header AMQP's field table cannot hold (an integer past 64
                # bits, a name past 255 bytes), from headers written into the table by hand.
                reason = f"cannot be encoded as an AMQP message ({type(exc).__name__}: {exc})"
                _fail(outcome, failed_keys, row, "unencodable", reason, retryable=False)
                continue
            if self._confirms:
                self._outstanding.append(self._next_tag)
                sent.append((self._next_tag, row, message_id))
                self._next_tag += 1
            else:
                outcome.confirmed.append(row)

    def _publish_one(self, row: OutboxRow, mandatory: bool, message_id: str) -> None:
        body = row.payload.encode("utf-8")
        frames = self._frames
        if frames is not None and frames.publish(
            self._channel.connection, row, body, mandatory, message_id
        ):
            return
        message = self._channel.prepare_message(
            body,
            0,
            CONTENT_TYPE,
            "utf-8",
            dict(row.headers),
            {"delivery_mode": 2, "message_id": message_id},
        )
        if frames is not None:
            # Only here, for rows of another shape: what py-amqp will put in the header frame.
            frames.check_header_fits(len(message._serialize_properties()))
        if self._virtual:
            self._channel.basic_publish(message, self._exchange_name, row.destination)
        else:
            self._channel.basic_publish(message, self._exchange_name, row.destination, mandatory)

    def _unroutable(self, row: OutboxRow) -> str:
        return (
            f"unroutable: no queue is bound to {row.destination!r} on exchange "
            f"{self._exchange_name!r}; start that endpoint's worker once so it declares its queue"
        )

    def _routes(self, routing_key: str) -> bool:
        channel = self._channel
        table = channel.get_table(self._exchange_name)
        queues = channel.typeof(self._exchange_name).lookup(
            table, self._exchange_name, routing_key, None
        )
        return bool(queues)

    def _wait_for_confirms(self) -> str | None:
        """Wait until every message is acked or nacked; return the refusal that closed the
        channel, if one did (its unsettled messages are then unknown)."""
        deadline = monotonic() + self._confirm_timeout
        while self._outstanding:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(
                    f"the broker did not confirm {len(self._outstanding)} messages within "
                    f"{self._confirm_timeout:g} s"
                )
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
            except self._channel_errors as exc:
                if not refuses_the_message(exc):
                    raise
                self._outstanding.clear()
                # py-amqp reopened the channel without confirms; start on a clean one.
                self.close()
                self._open_channel()
                return str(exc)
        return None

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, nacked=False)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, nacked=True)

    def _settle(self, delivery_tag: int, multiple: bool, *, nacked: bool) -> None:
        if multiple:
            for tag in self._outstanding:
                if tag > delivery_tag:
                    break
                self._settled.setdefault(tag, nacked)
        else:
            self._settled[delivery_tag] = nacked
        while self._outstanding and self._outstanding[0] in self._settled:
            self._outstanding.popleft()

    def _on_return(self, _exc: Exception, _exchange: str, _routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        if message_id:
            self._returned.add(str(message_id))


def _segment(queue: deque[OutboxRow]) -> list[OutboxRow]:
    """Take the next rows to publish together: at most one row of each partition key, so a
    failed row is known before the one behind it goes out, and a big row alone."""
    segment = [queue.popleft()]
    if _size(segment[0]) > ALONE_ABOVE:
        return segment
    keys = {segment[0].partition_key}
    while queue:
        row = queue[0]
        if (row.partition_key is not None and row.partition_key in keys) or (
            _size(row) > ALONE_ABOVE
        ):
            break
        keys.add(row.partition_key)
        segment.append(queue.popleft())
    return segment


def _size(row: OutboxRow) -> int:
    headers = sum(len(str(key)) + len(str(value)) for key, value in row.headers.items())
    if (len(row.payload) + headers) * 4 <= ALONE_ABOVE:
        return len(row.payload) + headers  # small whatever its characters: skip the encoding
    return len(row.payload.encode("utf-8", "surrogatepass")) + headers


def _fail(
    outcome: Outcome,
    failed_keys: set[str],
    row: OutboxRow,
    kind: str,
    reason: str,
    *,
    retryable: bool = True,
) -> None:
    outcome.failed.append(Failure(row, kind, reason, retryable))
    if row.partition_key is not None:
        failed_keys.add(row.partition_key)
