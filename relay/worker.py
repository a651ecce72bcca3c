"""The consumer worker: each broker message becomes one database transaction, then an ack.

Per message: check the envelope (JSON only, sagabox headers, size), decode it, then in one
transaction record its id in the inbox (seen before: skip), dispatch it to the endpoint, commit;
only then acknowledge it to the broker. A crash between commit and ack redelivers a message the
inbox already holds, so its effects happen once.

Failures never block the messages behind a poison one: errors listed as transient (optimistic
concurrency conflicts) are retried at once a few times; any other error schedules a delayed retry
as an outbox row addressed to this endpoint only, and the message is acknowledged. After the last
retry, or at once for a message that cannot be decoded or that nobody here handles, it goes to
the dead-letter table with the reason.

With `batch_size` > 1 the worker handles the messages waiting on its queue several to a
transaction: one commit (the costly part on a durable database) for the lot, each message still
recorded in the inbox under its own id. If anything in a batch fails, the batch is rolled back and
its messages are handled again one by one, so a poison message costs its neighbours a second try,
never their guarantees.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any, Literal, Protocol

from kombu import Consumer, Queue, binding
from kombu.message import Message as BrokerMessage
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from outbox import clock, tracing
from outbox.dead_letters import H_ATTEMPTS, H_FIRST_FAILED_AT, record_dead_letter
from outbox.envelope import H_CORRELATION_ID, H_TYPE, Envelope, decode
from outbox.errors import MalformedEnvelope, OutboxError
from outbox.inbox import Inbox, prune_inbox
from outbox.messages import Message
from outbox.registry import MessageRegistry
from outbox.urls import mask_secrets
from outbox.writer import Outbox
from relay.backoff import Backoff
from relay.broker import ACCEPT, DEFAULT_EXCHANGE, broker_errors, connect, describe, topic_exchange
from relay.failpoints import failpoint
from relay.observe import NOOP, Observer

log = logging.getLogger("sagabox.worker")

Outcome = Literal["handled", "duplicate", "retry_scheduled", "dead_lettered"]

# A dead letter keeps at most this much of a message that was refused for its size.
_KEPT_OF_OVERSIZED = 64 * 1024


class Unrecoverable(Exception):
    """Raise from a handler when retrying cannot help: the message is dead-lettered at once."""


class Endpoint(Protocol):
    """What a worker serves: its name (queue and inbox), its message types, and their handling."""

    @property
    def name(self) -> str: ...

    @property
    def registry(self) -> MessageRegistry: ...

    def routing_keys(self) -> list[str]:
        """The routing keys its queue binds: its own name (for commands) and event type names."""
        ...

    def accepts(self, type_name: str) -> bool:
        """Whether some handler here takes this message type."""
        ...

    def dispatch(self, session: Session, message: Message) -> None:
        """Run every handler for `message` in `session`'s transaction, without committing."""
        ...

    def begin_batch(self, session: Session, messages: Sequence[Message]) -> None:
        """Get ready to dispatch `messages` one after the other in `session`'s transaction
        (a saga runtime locks and reads their rows at once, and defers their writes)."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing message is tried before it is dead-lettered.

    `retry_at_once` errors (such as an optimistic concurrency conflict) are retried up to
    `immediate` times without delay; any other error schedules one delayed retry per entry of
    `delays`. Dropped database connections are always retried at once.
    """

    immediate: int = 5
    delays: tuple[timedelta, ...] = (
        timedelta(seconds=1),
        timedelta(seconds=10),
        timedelta(seconds=60),
    )
    retry_at_once: tuple[type[BaseException], ...] = ()


@dataclass
class WorkerStats:
    """Counters since the worker started."""

    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    #: Attempts retried in place after a transient error (a concurrency conflict, say).
    retried_at_once: int = 0
    #: Deliveries the broker flagged as redelivered (an earlier delivery went unacknowledged).
    redelivered: int = 0
    #: Batches whose shared transaction failed, so that their messages were handled one by one.
    batches_redone: int = 0

    def count(self, outcome: Outcome) -> None:
        attribute = {
            "handled": "handled",
            "duplicate": "duplicates",
            "retry_scheduled": "retried",
            "dead_lettered": "dead_lettered",
        }[outcome]
        setattr(self, attribute, getattr(self, attribute) + 1)


@dataclass(frozen=True)
class Delivery:
    """A message as the broker handed it over, before anything trusts it."""

    body: bytes
    headers: Mapping[str, Any] | None
    content_type: str | None


class Worker:
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
        max_message_bytes: int = 1024 * 1024,
        inbox_retention: timedelta = timedelta(days=7),
        prune_every: timedelta = timedelta(minutes=5),
        observer: Observer = NOOP,
    ) -> None:
        self.engine = engine
        self.broker_url = broker_url
        self.endpoint = endpoint
        self.exchange = exchange
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        #: Seconds to wait for one more message before handling a batch that is not full.
        self.batch_wait = batch_wait
        # A batch fills only if the broker lets that many messages go unacknowledged, and the
        # next one arrives while this one is handled only if it lets twice as many.
        self.prefetch = max(prefetch, 2 * batch_size if batch_size > 1 else 1)
        self.retry = retry or RetryPolicy()
        self.max_message_bytes = max_message_bytes
        self.inbox_retention = inbox_retention
        self.prune_every = prune_every
        self.stats = WorkerStats()
        self.observer = observer
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._stopping = threading.Event()
        self._backoff = Backoff()
        self._next_prune: datetime | None = None
        self._pending: list[BrokerMessage] = []

    # --- one message -------------------------------------------------------------------------

    def process(self, delivery: Delivery) -> Outcome:
        """Handle one delivery to its end: handled, duplicate, retry scheduled or dead-lettered.

        Raises only when the database is unreachable even for recording the failure; the
        caller then puts the message back on the queue and backs off.
        """
        started = perf_counter()
        prepared = self._prepare(delivery)
        if isinstance(prepared, str):
            outcome = prepared
        else:
            outcome = self._handle_traced(delivery, *prepared)
        self._count(delivery, outcome, perf_counter() - started)
        return outcome

    def process_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Handle several deliveries in one transaction; return their outcomes, in order.

        Each message is still recorded in the inbox under its own id, so a duplicate in the
        batch (or one processed before) is skipped alone. If the shared transaction fails, it
        rolls back and every message is handled again on its own, with `process`'s retries.
        Raises, like `process`, only when the database cannot even record a failure.
        """
        if len(deliveries) == 1:
            return [self.process(deliveries[0])]
        started = perf_counter()
        outcomes: dict[int, Outcome] = {}
        ready: list[tuple[int, Envelope, Message]] = []
        for index, delivery in enumerate(deliveries):
            prepared = self._prepare(delivery)
            if isinstance(prepared, str):
                outcomes[index] = prepared
            else:
                ready.append((index, *prepared))
        if ready:
            try:
                outcomes.update(self._handle_together(ready))
            except Exception as exc:
                self.stats.batches_redone += 1
                log.info(
                    "worker: a batch of %d messages failed (%s: %s); handling them one by one",
                    len(ready),
                    type(exc).__name__,
                    mask_secrets(exc),
                )
                for index, envelope, message in ready:
                    outcomes[index] = self._handle_traced(deliveries[index], envelope, message)
        seconds = (perf_counter() - started) / len(deliveries)
        for index, delivery in enumerate(deliveries):
            self._count(delivery, outcomes[index], seconds)
        return [outcomes[index] for index in range(len(deliveries))]

    def _count(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
        self.stats.count(outcome)
        headers = delivery.headers if isinstance(delivery.headers, Mapping) else {}
        message_type = headers.get(H_TYPE)
        self.observer.message_processed(
            endpoint=self.endpoint.name,
            message_type=message_type if isinstance(message_type, str) else "unreadable",
            outcome=outcome,
            seconds=seconds,
        )

    def _prepare(self, delivery: Delivery) -> tuple[Envelope, Message] | Outcome:
        """Check and decode a delivery; dead-letter it (returning that outcome) if it is unfit."""
        if len(delivery.body) > self.max_message_bytes:
            return self._dead(
                delivery,
                f"the message is {len(delivery.body)} bytes, over this endpoint's limit of "
                f"{self.max_message_bytes}; the first {_KEPT_OF_OVERSIZED} bytes are kept",
                body=delivery.body[:_KEPT_OF_OVERSIZED],
            )
        try:
            envelope = Envelope.from_wire(delivery.body, delivery.headers, delivery.content_type)
        except MalformedEnvelope as exc:
            return self._dead(delivery, f"refused unread: {exc}")
        if not self.endpoint.accepts(envelope.type):
            known = envelope.type in self.endpoint.registry
            return self._dead(
                delivery,
                f"endpoint {self.endpoint.name!r} has no handler for {envelope.type!r}"
                if known
                else f"unknown message type {envelope.type!r}: no class is registered under "
                "that name in this process",
            )
        try:
            return envelope, decode(envelope, self.endpoint.registry)
        except OutboxError as exc:
            return self._dead(delivery, f"cannot decode: {exc}", error=exc)

    @contextlib.contextmanager
    def _span(self, envelope: Envelope) -> Iterator[Any]:
        with tracing.consuming(
            endpoint=self.endpoint.name,
            message_type=envelope.type,
            message_id=str(envelope.message_id),
            headers=envelope.headers,
        ) as span:
            yield span

    def _handle_traced(self, delivery: Delivery, envelope: Envelope, message: Message) -> Outcome:
        with self._span(envelope) as span:
            outcome = self._handle(delivery, envelope, message)
            if span is not None:
                span.set_attribute("sagabox.outcome", outcome)
            return outcome

    def _handle_together(self, ready: list[tuple[int, Envelope, Message]]) -> dict[int, Outcome]:
        """One transaction for a batch: one inbox statement for all, then each dispatch."""
        outcomes: dict[int, Outcome] = {}
        with self._sessions() as session, session.begin():
            new = Inbox(session, self.endpoint.name).record_many(e.message_id for _, e, _ in ready)
            self.endpoint.begin_batch(
                session, [message for _, envelope, message in ready if envelope.message_id in new]
            )
            for index, envelope, message in ready:
                if envelope.message_id not in new:
                    _log_duplicate(envelope)
                    outcomes[index] = "duplicate"
                    continue
                new.discard(envelope.message_id)  # a second copy in this batch is a duplicate
                with self._span(envelope) as span:
                    self.endpoint.dispatch(session, message)
                    if span is not None:
                        span.set_attribute("sagabox.outcome", "handled")
                outcomes[index] = "handled"
        failpoint("worker.after_commit")
        return outcomes

    def _handle(self, delivery: Delivery, envelope: Envelope, message: Message) -> Outcome:
        """Run the endpoint's handlers in one transaction, retrying or dead-lettering failures."""
        last_error: BaseException | None = None
        for _ in range(self.retry.immediate + 1):
            try:
                with self._sessions() as session, session.begin():
                    if not Inbox(session, self.endpoint.name).record(envelope.message_id):
                        _log_duplicate(envelope)
                        return "duplicate"
                    self.endpoint.dispatch(session, message)
                failpoint("worker.after_commit")
                return "handled"
            except Unrecoverable as exc:
                return self._dead(delivery, f"unrecoverable: {exc}", error=exc)
            except Exception as exc:
                last_error = exc
                if not self._retry_at_once(exc):
                    break
                self.stats.retried_at_once += 1
                log.debug(
                    "worker: %s %s: %s; retrying at once", envelope.type, envelope.message_id, exc
                )
        assert last_error is not None
        return self._retry_later(delivery, envelope, last_error)

    def _retry_at_once(self, exc: BaseException) -> bool:
        if isinstance(exc, self.retry.retry_at_once):
            return True
        return isinstance(exc, DBAPIError) and exc.connection_invalidated

    def _retry_later(self, delivery: Delivery, envelope: Envelope, exc: BaseException) -> Outcome:
        failed = _attempts(envelope.headers) + 1
        first_failed = envelope.headers.get(H_FIRST_FAILED_AT) or clock.now().isoformat()
        if failed > len(self.retry.delays):
            return self._dead(
                delivery,
                f"failed {failed} times; the last error was {type(exc).__name__}: {exc}",
                error=exc,
                attempts=failed,
                first_failed_at=_parse_time(first_failed),
            )
        delay = self.retry.delays[failed - 1]
        headers = {**envelope.headers, H_ATTEMPTS: str(failed), H_FIRST_FAILED_AT: first_failed}
        with self._sessions() as session, session.begin():
            # Addressed to this endpoint's name, so the other subscribers of an event are not
            # handed it again.
            Outbox(session).add_envelope(
                Envelope(envelope.type, envelope.version, envelope.payload, headers),
                destination=self.endpoint.name,
                partition_key=headers.get(H_CORRELATION_ID),
                deliver_at=clock.now() + delay,
            )
        log.warning(
            "worker: %s %s failed (attempt %d of %d: %s: %s); retrying in %s",
            envelope.type,
            envelope.message_id,
            failed,
            len(self.retry.delays) + 1,
            type(exc).__name__,
            mask_secrets(exc),
            delay,
        )
        return "retry_scheduled"

    def _dead(
        self,
        delivery: Delivery,
        reason: str,
        *,
        error: BaseException | None = None,
        body: bytes | None = None,
        attempts: int = 1,
        first_failed_at: datetime | None = None,
    ) -> Outcome:
        with self._sessions() as session, session.begin():
            record_dead_letter(
                session,
                endpoint=self.endpoint.name,
                body=delivery.body if body is None else body,
                headers=delivery.headers,
                content_type=delivery.content_type,
                reason=reason,
                error=f"{type(error).__name__}: {error}" if error is not None else None,
                traceback="".join(traceback.format_exception(error)) if error is not None else None,
                attempts=attempts,
                first_failed_at=first_failed_at,
            )
        log.error("worker: dead-lettered a message: %s", mask_secrets(reason))
        return "dead_lettered"

    # --- the broker side ---------------------------------------------------------------------

    def queue(self) -> Queue:
        """The endpoint's durable queue with its bindings."""
        exchange = topic_exchange(self.exchange)
        return Queue(
            self.endpoint.name,
            [binding(exchange, routing_key=key) for key in self.endpoint.routing_keys()],
            durable=True,
        )

    def drain(self, limit: int | None = None) -> int:
        """Process what waits in the queue until it is empty (or `limit`); return how many.

        Deterministic, for tests and `--once`: it pulls with basic.get rather than subscribing,
        `batch_size` messages at a time.
        """
        processed = 0
        with connect(self.broker_url) as connection:
            channel = connection.channel()
            queue = self.queue()(channel)
            queue.declare()
            while limit is None or processed < limit:
                message = queue.get(no_ack=False, accept=ACCEPT)
                if message is not None:
                    self._pending.append(message)
                    processed += 1
                if self._pending and (
                    message is None or len(self._pending) >= self.batch_size or processed == limit
                ):
                    self._flush(pause=False)
                if message is None:
                    break
        return processed

    def run(self) -> None:
        """Consume until `stop()`; reconnect with backoff when the broker goes away."""
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
            connection = connect(self.broker_url)
            try:
                connection.ensure_connection(max_retries=0)  # our own backoff retries
                channel = connection.channel()
                queue = self.queue()(channel)
                queue.declare()
                consumer = Consumer(
                    channel,
                    queues=[queue],
                    on_message=self._receive,
                    accept=ACCEPT,
                    prefetch_count=self.prefetch,
                )
                consumer.consume()
                backoff.reset()
                while not self._stopping.is_set():
                    self._consume_once(connection)
                    self._maybe_prune()
                self._flush()  # what was received before the stop is finished, not dropped
            except broker_errors(connection) as exc:
                # Unacknowledged, these come back from the broker to whichever consumer is next.
                self._pending.clear()
                delay = backoff.next_delay()
                log.warning(
                    "worker: broker connection lost (%s: %s); reconnecting in %.2f s",
                    type(exc).__name__,
                    mask_secrets(exc),
                    delay,
                )
                self._stopping.wait(delay)
            finally:
                try:
                    connection.release()
                except broker_errors(connection):
                    pass
        log.info("worker: stopped; %s", self.stats)

    def _consume_once(self, connection: Any) -> None:
        """Take one delivery from the connection; handle the batch once it is full, or once no
        further message arrives within `batch_wait` (a lone message never waits longer)."""
        try:
            connection.drain_events(timeout=self.batch_wait if self._pending else 1.0)
        except TimeoutError:
            self._flush()
            return
        if len(self._pending) >= self.batch_size:
            self._flush()

    def stop(self) -> None:
        """Ask `run` to return after the message in flight (safe from a signal handler)."""
        self._stopping.set()

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

    def _receive(self, message: BrokerMessage) -> None:
        self._pending.append(message)

    def _flush(self, *, pause: bool = True) -> None:
        """Handle the received messages as one batch, then acknowledge each of them."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self.process_batch([self._delivery(message) for message in batch])
        except Exception as exc:
            # The database failed even for recording the failure: give the messages back and
            # pause, rather than acknowledging something that left no trace. Any that did
            # commit are skipped by the inbox when they come back.
            self.stats.requeued += len(batch)
            for message in batch:
                message.requeue()
            if not pause:
                raise
            delay = self._backoff.next_delay()
            log.warning(
                "worker: database unavailable (%s: %s); %d message(s) requeued, pausing %.2f s",
                type(exc).__name__,
                mask_secrets(exc),
                len(batch),
                delay,
            )
            self._stopping.wait(delay)
            return
        self._backoff.reset()
        for message in batch:
            message.ack()

    def _delivery(self, message: BrokerMessage) -> Delivery:
        body = message.body
        # py-amqp hands over text when the sender named a text encoding; keep bytes throughout.
        if isinstance(body, str):
            body = body.encode("utf-8")
        if message.delivery_info.get("redelivered"):
            self.stats.redelivered += 1
            log.info("worker: the broker redelivers a message (its first delivery was not acked)")
        return Delivery(body, message.headers, message.content_type)

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


def _log_duplicate(envelope: Envelope) -> None:
    # Rare and telling (a relay or worker crashed mid-way): worth a line.
    log.info(
        "worker: %s %s was processed before; skipped (inbox)", envelope.type, envelope.message_id
    )


def _attempts(headers: Mapping[str, str]) -> int:
    try:
        return max(int(headers.get(H_ATTEMPTS, "0")), 0)
    except ValueError:
        return 0


def _parse_time(text: str) -> datetime | None:
    try:
        return clock.ensure_aware(datetime.fromisoformat(text))
    except ValueError:
        return None
