"""The consuming worker's acknowledgements: which handled messages may wait for company, and
the one frame that settles them together.

One ack a message cost RabbitMQ and the worker a third of an unbatched step's time
(bench/results/2026-12-02-session10.md), so handled (committed) messages wait to share an
AMQP `multiple` ack, at most `every` of them. A crash or a lost connection before it redelivers
them, and the inbox skips them: their effects happened once. What the inbox would not know
again is acknowledged at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu.message import Message as BrokerMessage

from relay.endpoint import Outcome

__all__ = ["ACK_EVERY", "Acks", "acks_many"]

#: Handled messages acknowledged with one frame, at most (and at most half the prefetch).
ACK_EVERY = 32

# Outcomes the inbox knows a redelivery by, so that their acks may wait. A dead letter (one
# without a message id has no key to be known by) and a scheduled retry are written outside
# it, and a redelivery would write them twice: theirs go out at once.
_INBOX_KEEPS = frozenset({"handled", "duplicate", "dropped"})


class Acks:
    """The handled messages of one channel whose ack waits, and sending it."""

    def __init__(self, prefetch: int) -> None:
        #: How many handled messages one ack may settle: half the prefetch, so that the broker
        #: never stops delivering for want of the acks that wait.
        self.every = max(1, min(ACK_EVERY, prefetch // 2))
        # Whether the broker takes one ack for many deliveries (AMQP's `multiple` flag); kombu's
        # in-process transports ignore the flag, so there each message is acked on its own.
        self.many = False
        self._waiting: list[BrokerMessage] = []

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def handled(
        self, messages: list[BrokerMessage], outcomes: Iterable[Outcome], *, now: bool = False
    ) -> None:
        """Add messages whose transactions committed: acknowledged `now`, else once `every`
        wait or an outcome the inbox would not know again is among them."""
        self._waiting.extend(messages)
        if now or len(self._waiting) >= self.every or not _INBOX_KEEPS.issuperset(outcomes):
            self.send()

    def send(self) -> None:
        """Acknowledge every message that waits: with one frame where the broker allows it.

        AMQP's `multiple` ack settles every delivery on the channel up to its tag. Deliveries
        arrive in the order of their tags and are handled in it; each is acknowledged or
        requeued, those handled before a requeue first; a new channel starts with none. So the
        messages that wait hold every delivery up to their highest tag this channel has not
        settled, and one ack of that tag settles exactly them.
        """
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        if self.many and len(batch) > 1:
            max(batch, key=lambda message: message.delivery_tag).ack(multiple=True)
            return
        for message in batch:
            message.ack()

    def forget(self) -> None:
        """Drop the waiting messages with their channel: unsettled, the broker delivers them
        again (and the inbox skips them)."""
        self._waiting.clear()


def acks_many(connection: Any) -> bool:
    """Whether `connection`'s transport settles many deliveries with one `multiple` ack (the
    AMQP ones do; kombu's virtual transports, memory:// among them, ignore the flag)."""
    return getattr(connection.transport, "driver_type", None) == "amqp"
