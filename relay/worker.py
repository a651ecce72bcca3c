"""The consumer worker: the broker side, from a queue's deliveries to their acknowledgements.

It declares the endpoint's queue with the bindings its handlers need (and removes bindings a
former version declared for events nothing here handles any more), consumes with a heartbeat,
hands what arrives to `relay.processing` one message or one batch at a time, and acknowledges
each message only after its transaction committed. A database that cannot be used makes it
requeue what it holds and back off; a broker that goes away, reconnect with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from kombu import Consumer, Queue, binding
from kombu.message import Message as BrokerMessage
from sqlalchemy import Engine

from outbox import clock
from outbox.inbox import prune_inbox
from outbox.messages import Event
from outbox.urls import mask_secrets
from relay import compressed
from relay.acks import Acks, acks_many
from relay.amqp_properties import UNDECODABLE
from relay.backoff import Backoff
from relay.broker import (
    ACCEPT,
    DEFAULT_EXCHANGE,
    HEARTBEAT_SECONDS,
    broker_errors,
    connect,
    describe,
    topic_exchange,
)
from relay.buffered_reads import buffer_reads
from relay.endpoint import (
    Delivery,
    Endpoint,
    Outcome,
    RetryPolicy,
    Unrecoverable,
    WorkerStats,
)
from relay.failures import BatchInterrupted
from relay.observe import NOOP, Observer
from relay.preflight import WORKER_TABLES, check_broker, check_database
from relay.processing import Processor

__all__ = [
    "Delivery",
    "Endpoint",
    "Outcome",
    "RetryPolicy",
    "Unrecoverable",
    "Worker",
    "WorkerStats",
]

log = logging.getLogger("sagabox.worker")

#: The largest prefetch count AMQP's basic.qos carries.
MAX_PREFETCH = 65_535


class Worker(Processor):
    """Consumes an endpoint's queue: `run` until stopped, or `drain` what is waiting."""

    def __init__(
        self,
        engine: Engine,
        broker_url: str,
        endpoint: Endpoint,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        prefetch: int = 50,
        batch_size: int = 1,
        batch_wait: float = 0.005,
        retry: RetryPolicy | None = None,
        max_message_bytes: int | None = None,
        inbox_retention: timedelta = timedelta(days=7),
        prune_every: timedelta = timedelta(minutes=5),
        heartbeat: float = HEARTBEAT_SECONDS,
        observer: Observer = NOOP,
    ) -> None:
        super().__init__(
            engine, endpoint, retry=retry, max_message_bytes=max_message_bytes, observer=observer
        )
        self.broker_url = broker_url
        self.exchange = exchange
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        #: Seconds to wait for one more message before handling a batch that is not full.
        self.batch_wait = batch_wait
        # A batch fills only if the broker lets that many messages go unacknowledged, and the
        # next one arrives while this one is handled only if it lets twice as many; AMQP's
        # prefetch count is 16 bits (py-amqp fails to open the consumer past it).
        self.prefetch = min(max(prefetch, 2 * batch_size if batch_size > 1 else 1), MAX_PREFETCH)
        self.inbox_retention = inbox_retention
        self.prune_every = prune_every
        #: Seconds between AMQP heartbeats (0: none), so a dead broker is noticed in seconds.
        self.heartbeat = heartbeat
        self._stopping = threading.Event()
        self._backoff = Backoff()
        self._next_prune: datetime | None = None
        self._pending: list[BrokerMessage] = []
        # Handled messages whose ack waits for the next ones' (`relay.acks`): sent once enough
        # wait, once the queue is quiet for `batch_wait`, before a requeue and at a stop.
        self._acks = Acks(self.prefetch)

    @property
    def ack_every(self) -> int:
        """How many handled messages one ack settles at most (half the prefetch, up to 32)."""
        return self._acks.every

    # --- start-up ----------------------------------------------------------------------------

    def check(self) -> None:
        """Fail fast on what waiting cannot fix: raise `Misconfigured` (an unknown scheme,
        refused credentials, missing tables), saying what to do. A broker or database that is
        merely unreachable now is logged, and waited for by the consume loop."""
        for not_yet in (check_broker(self.broker_url), check_database(self.engine, WORKER_TABLES)):
            if not_yet is not None:
                log.warning("worker: %s; waiting for it", not_yet)

    def queue(self) -> Queue:
        """The endpoint's durable queue with its bindings."""
        exchange = topic_exchange(self.exchange)
        return Queue(
            self.endpoint.name,
            [binding(exchange, routing_key=key) for key in self.endpoint.routing_keys()],
            durable=True,
        )

    def stale_routing_keys(self) -> list[str]:
        """Event types the registry knows that this endpoint does not bind (any more): their
        bindings, if a former version declared them, are removed when the queue is declared."""
        wanted = set(self.endpoint.routing_keys())
        return sorted(
            cls.type_name
            for cls in self.endpoint.registry
            if issubclass(cls, Event) and cls.type_name and cls.type_name not in wanted
        )

    def _open(self, connection: Any) -> tuple[Any, Any]:
        """A channel on `connection` (its frames read through a buffer) and the endpoint's
        queue declared on it; its acks settle many deliveries at once where the broker can."""
        channel = connection.channel()
        buffer_reads(connection)
        self._acks.many = acks_many(connection)
        return channel, self._declare(channel)

    def _declare(self, channel: Any) -> Any:
        compressed.hold(channel)  # the worker decompresses, within the size limit
        queue = self.queue()(channel)
        queue.declare()
        exchange = topic_exchange(self.exchange)
        for key in self.stale_routing_keys():
            # Unbinding a binding that does not exist is a no-op for the broker.
            queue.unbind_from(exchange, routing_key=key)
        return queue

    # --- consuming ---------------------------------------------------------------------------

    def drain(self, limit: int | None = None) -> int:
        """Process what waits in the queue until it is empty (or `limit`); return how many.

        Deterministic, for tests and `--once`: it pulls with basic.get rather than subscribing,
        `batch_size` messages at a time.
        """
        processed = 0
        with connect(self.broker_url, heartbeat=self.heartbeat) as connection:
            _, queue = self._open(connection)
            while limit is None or processed < limit:
                connection.heartbeat_check()
                message = compressed.get(queue)
                if message is not None:
                    self._pending.append(message)
                    processed += 1
                if self._pending and (
                    message is None or len(self._pending) >= self.batch_size or processed == limit
                ):
                    self._flush(pause=False, ack_now=True)
                if message is None:
                    break
        return processed

    def run(self) -> None:
        """Consume until `stop()`; reconnect with backoff when the broker goes away.

        Fails fast first (see `check`) on a configuration that can never work.
        """
        self.check()
        log.info(
            "worker: endpoint %r consuming from %s (prefetch %d, batches of %d, keys %s)",
            self.endpoint.name,
            describe(self.broker_url),
            self.prefetch,
            self.batch_size,
            ", ".join(self.endpoint.routing_keys()),
        )
        backoff = Backoff()
        while not self._stopping.is_set():
            connection = connect(self.broker_url, heartbeat=self.heartbeat)
            try:
                connection.ensure_connection(max_retries=0)  # our own backoff retries
                channel, queue = self._open(connection)
                consumer = Consumer(
                    channel,
                    queues=[queue],
                    on_message=self._receive,
                    on_decode_error=self._receive_unreadable,
                    accept=ACCEPT,
                    prefetch_count=self.prefetch,
                )
                consumer.consume()
                backoff.reset()
                while not self._stopping.is_set():
                    self._consume_once(connection)
                    self._maybe_prune()
                # What was received before the stop is finished and acknowledged, not dropped.
                self._flush(ack_now=True)
                self._acks.send()
            except broker_errors(connection) as exc:
                delay = backoff.next_delay()
                log.warning(
                    "worker: broker connection lost (%s: %s); reconnecting in %.2f s",
                    type(exc).__name__,
                    mask_secrets(exc),
                    delay,
                )
                self._stopping.wait(delay)
            except Exception:
                # Something the broker client could not decode (py-amqp raising mid-frame, say)
                # leaves this connection unusable; a worker that exits here would be restarted
                # into the same message. Drop the connection and come back with backoff.
                delay = backoff.next_delay()
                log.exception("worker: consuming failed; reconnecting in %.2f s", delay)
                self._stopping.wait(delay)
            finally:
                with contextlib.suppress(Exception):  # a broken connection may fail to close
                    connection.release()
                # What is unacknowledged comes back from the broker to whichever consumer is
                # next (the handled messages too: the inbox skips them), as do the deliveries
                # closing still read: none is handled, nor acknowledged, on the next channel.
                self._pending.clear()
                self._acks.forget()
        # The stop is spent: `run` may be called again (a stop before it still counts).
        self._stopping.clear()
        log.info("worker: stopped; %s", self.stats)

    def _consume_once(self, connection: Any) -> None:
        """Take one delivery from the connection; handle the batch once it is full, or once no
        further message arrives within `batch_wait` (a lone message never waits longer)."""
        # Sends our heartbeat when due, and raises if the broker's stopped arriving.
        connection.heartbeat_check()
        try:
            waiting = self._pending or self._acks
            connection.drain_events(timeout=self.batch_wait if waiting else 1.0)
        except TimeoutError:
            self._flush(ack_now=True)  # the queue is quiet: nothing to share the ack with
            self._acks.send()
            return
        if len(self._pending) >= self.batch_size:
            self._flush()

    def stop(self) -> None:
        """Ask `run` to return after the message in flight (safe from a signal handler); a
        stop before `run` makes it return at once. The worker can run again afterwards."""
        self._stopping.set()

    def _receive(self, message: BrokerMessage) -> None:
        self._pending.append(message)

    def _receive_unreadable(self, message: Any, exc: Exception) -> None:
        """A delivery kombu marked as failed (see `relay.compressed`): handled, hence
        dead-lettered, with the rest; raising would drop the connection and bring it back."""
        if not isinstance(message, BrokerMessage):
            raise exc  # not even a message to settle: the connection is dropped, as before
        self._pending.append(message)

    def _flush(self, *, pause: bool = True, ack_now: bool = False) -> None:
        """Handle the received messages as one batch, then acknowledge them: at once with
        `ack_now`, else with the next ones once `ack_every` are handled."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            outcomes: list[Outcome] = self.process_batch(
                [self._delivery(message) for message in batch]
            )
        except Exception as exc:
            # Nothing a message holds gets here (`relay.failures`): the database failed, even
            # for recording a failure. Give the messages back and pause, rather than
            # acknowledge something that left no trace. Any that did commit are skipped by
            # the inbox when they come back. Those handled before are acknowledged first.
            self._acks.send()
            settled = set(exc.settled) if isinstance(exc, BatchInterrupted) else set()
            failure = exc.__cause__ if settled and exc.__cause__ is not None else exc
            for index, message in enumerate(batch):
                if index in settled:
                    message.ack()  # its outcome committed: not to be handled again
                else:
                    self.stats.requeued += 1
                    message.requeue()
            if not pause:
                raise failure from failure.__cause__
            delay = self._backoff.next_delay()
            log.warning(
                "worker: database unavailable (%s: %s); %d message(s) requeued, pausing %.2f s",
                type(failure).__name__,
                mask_secrets(failure),
                len(batch) - len(settled),
                delay,
            )
            self._stopping.wait(delay)
            return
        self._backoff.reset()
        assert len(outcomes) == len(batch)
        self._acks.handled(batch, outcomes, now=ack_now)

    def _delivery(self, message: BrokerMessage) -> Delivery:
        """What the broker handed over, as plain data; nothing here may raise on odd input."""
        body = message.body
        # py-amqp hands over text when the sender named a text encoding; keep bytes throughout.
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        elif not isinstance(body, bytes):
            body = bytes(body or b"")
        headers, unreadable = message.headers, compressed.unreadable(message)
        compression = compressed.held(message)
        if compression is not None:
            got = compressed.decompress(body, compression, self.max_message_bytes)
            if isinstance(got, str):
                unreadable = got  # dead-lettered as it arrived, compressed
            else:  # handled (or dead-lettered) as if it had come uncompressed
                body, headers = got, {k: v for k, v in headers.items() if k != "compression"}
        info = message.delivery_info or {}
        if info.get("redelivered"):
            self.stats.redelivered += 1
            log.info("worker: the broker redelivers a message (its first delivery was not acked)")
        properties = getattr(message, "properties", None) or {}
        undecodable = properties.get(UNDECODABLE) if isinstance(properties, dict) else None
        routing_key = info.get("routing_key")
        content_type = message.content_type
        return Delivery(
            body,
            headers,
            content_type if isinstance(content_type, str) or content_type is None else None,
            routing_key=routing_key if isinstance(routing_key, str) else None,
            undecodable=tuple(undecodable or ()),
            unreadable=unreadable,
        )

    # --- housekeeping --------------------------------------------------------------------------

    def prune_inbox(self, *, batches: int = 10, batch_size: int = 1000) -> int:
        """Delete inbox rows older than the retention, in short transactions; return how many."""
        cutoff = clock.now() - self.inbox_retention
        deleted = 0
        for _ in range(batches):
            with self._sessions() as session, session.begin():
                count = prune_inbox(session, older_than=cutoff, batch_size=batch_size)
            deleted += count
            if count < batch_size:
                break
        return deleted

    def _maybe_prune(self) -> None:
        now = clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + self.prune_every
        try:
            pruned = self.prune_inbox()
        except Exception as exc:
            log.warning("worker: inbox pruning failed (%s); trying later", mask_secrets(exc))
            return
        if pruned:
            log.info("worker: pruned %d inbox rows older than %s", pruned, self.inbox_retention)
