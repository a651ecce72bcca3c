"""Publishing claimed outbox rows, returning only once the broker has taken them.

On RabbitMQ the channel is in confirm mode and a whole batch is published before waiting: the
broker acknowledges many delivery tags at once, so a batch costs one round trip, not one per
message (py-amqp's own `confirm_publish` waits after every message). Messages addressed to an
endpoint are published `mandatory`: if no queue is bound, the broker returns them and the relay
keeps the row instead of losing it. Events may legitimately have no subscriber.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from time import monotonic
from typing import Any

from kombu import Connection
from kombu.transport import virtual

from outbox.claim import OutboxRow
from outbox.envelope import CONTENT_TYPE
from relay.broker import topic_exchange, uses_confirms


class BrokerRefused(ConnectionError):
    """The broker refused (nacked) a message; the batch is rolled back and retried."""


class ConfirmTimeout(ConnectionError):
    """The broker did not confirm the batch in time; the batch is rolled back and retried."""


class Publisher:
    """Publishes rows on one channel of `connection`; discard it after any error."""

    def __init__(
        self, connection: Connection, exchange: str, *, confirm_timeout: float = 30.0
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._confirm_timeout = confirm_timeout
        connection.ensure_connection(max_retries=0)  # our own backoff retries
        self._channel: Any = connection.channel()
        topic_exchange(exchange)(self._channel).declare()
        self._virtual = isinstance(self._channel, virtual.Channel)
        self._confirms = uses_confirms(connection)
        self._unconfirmed: deque[int] = deque()
        self._acked_alone: set[int] = set()
        self._next_tag = 1
        self._nacked = False
        self._returned: set[str] = set()
        if self._confirms:
            self._channel.confirm_select()
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)
            self._channel.events["basic_return"].add(self._on_return)

    def publish(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        """Publish `rows` in order and wait until the broker has them all.

        Returns the rows the broker could not route (no queue bound to an endpoint's name): the
        caller keeps those for later. Raises if the broker refused any message or went away.
        """
        self._returned.clear()
        unroutable: list[OutboxRow] = []
        for row in rows:
            mandatory = row.destination != row.type  # addressed to an endpoint, not an event
            if self._virtual and not self._routes(row.destination):
                # What RabbitMQ does with `mandatory`, done by hand for kombu's own transports.
                if mandatory:
                    unroutable.append(row)
                continue
            message = self._channel.prepare_message(
                row.payload.encode("utf-8"),
                0,
                CONTENT_TYPE,
                "utf-8",
                dict(row.headers),
                {"delivery_mode": 2, "message_id": str(row.message_id)},
            )
            if self._virtual:
                self._channel.basic_publish(message, self._exchange_name, row.destination)
            else:
                self._channel.basic_publish(
                    message, self._exchange_name, row.destination, mandatory
                )
            if self._confirms:
                self._unconfirmed.append(self._next_tag)
                self._next_tag += 1
        if self._confirms:
            self._wait_for_confirms()
            # The broker sends a return before the ack of the same message.
            unroutable.extend(row for row in rows if str(row.message_id) in self._returned)
        return unroutable

    def close(self) -> None:
        """Close the channel; the connection stays the caller's."""
        # Closing after a failure may fail again; there is nothing left to do about it.
        with contextlib.suppress(Exception):
            self._channel.close()

    def _routes(self, routing_key: str) -> bool:
        channel = self._channel
        table = channel.get_table(self._exchange_name)
        queues = channel.typeof(self._exchange_name).lookup(
            table, self._exchange_name, routing_key, None
        )
        return bool(queues)

    def _wait_for_confirms(self) -> None:
        deadline = monotonic() + self._confirm_timeout
        while self._unconfirmed:
            if self._nacked:
                raise BrokerRefused("the broker refused (nacked) a message of the batch")
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(
                    f"the broker did not confirm {len(self._unconfirmed)} messages within "
                    f"{self._confirm_timeout:g} s"
                )
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            raise BrokerRefused("the broker refused (nacked) a message of the batch")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            while self._unconfirmed and self._unconfirmed[0] <= delivery_tag:
                self._unconfirmed.popleft()
        else:
            self._acked_alone.add(delivery_tag)
        while self._unconfirmed and self._unconfirmed[0] in self._acked_alone:
            self._acked_alone.discard(self._unconfirmed.popleft())

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(delivery_tag, multiple)

    def _on_return(self, _exc: Exception, _exchange: str, _routing_key: str, message: Any) -> None:
        message_id = message.properties.get("message_id")
        if message_id:
            self._returned.add(str(message_id))
