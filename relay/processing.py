"""Turning deliveries into handled messages: check, decode, one transaction each, then an outcome.

Per message: check the envelope (JSON only, sagabox headers, size), decode it, then in one
transaction record its id in the inbox (seen before: skip), dispatch it to the endpoint, commit.
A crash between commit and ack redelivers a message the inbox already holds, so its effects
happen once.

Failures never block the messages behind a poison one. Whatever goes wrong before the handlers
run is bad input (`relay.failures` sorts every error in one place): that message is
dead-lettered at once, with the reason. Handler errors listed as transient (optimistic
concurrency conflicts) are retried at once a few times; any other schedules a delayed retry as
an outbox row addressed to this endpoint only. After the last retry the message goes to the
dead letters too. Only a database that cannot be used makes `process` raise: the caller then
puts the message back on the queue and backs off.

With several deliveries at once (`process_batch`) the messages share one transaction (one
commit, the costly part on a durable database), each still recorded in the inbox under its own
id. If anything in the batch fails, it is rolled back and its messages are handled again one by
one, so a poison message costs its neighbours a second try, never their guarantees.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from time import perf_counter
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox import tracing
from outbox.envelope import H_TYPE, Envelope, decode
from outbox.errors import MalformedEnvelope, MessageTooLarge, OutboxError, UnstorableText
from outbox.inbox import Inbox
from outbox.limits import max_message_bytes as max_message_bytes_setting
from outbox.limits import too_large
from outbox.messages import Message
from outbox.return_address import check as check_return_address
from outbox.urls import mask_secrets
from relay import delayed_retry
from relay.dead_lettering import dead_letter
from relay.endpoint import (
    Delivery,
    Endpoint,
    Outcome,
    RecordingEndpoint,
    RetryPolicy,
    Unrecoverable,
    WorkerStats,
)
from relay.failpoints import failpoint
from relay.failures import BatchInterrupted, database_unavailable, retry_at_once
from relay.message_log import escaped, log_outcome
from relay.observe import NOOP, Observer

log = logging.getLogger("sagabox.worker")

Prepared = tuple[Envelope, Message]

_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class Processor:
    """Handles deliveries for one endpoint on one database; the broker side is `Worker`'s."""

    def __init__(
        self,
        engine: Engine,
        endpoint: Endpoint,
        *,
        retry: RetryPolicy | None = None,
        max_message_bytes: int | None = None,
        observer: Observer = NOOP,
    ) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        #: The size limit, the writers' own by default (`outbox.limits`).
        self.max_message_bytes = max_message_bytes or max_message_bytes_setting()
        self.stats = WorkerStats()
        self.observer = observer
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # What the queue is bound with now; a delivery through any other key came through a
        # binding a former version of this endpoint declared.
        self._routing_keys = frozenset(endpoint.routing_keys())
        self._recording = endpoint if isinstance(endpoint, RecordingEndpoint) else None

    # --- one message, or several ---------------------------------------------------------------

    def process(self, delivery: Delivery) -> Outcome:
        """Handle one delivery to its end: handled, duplicate, retry scheduled, dead-lettered
        or dropped.

        Raises only when the database is unavailable, even for recording the failure; the
        caller then puts the message back on the queue and backs off.
        """
        started = perf_counter()
        prepared = self._prepare(delivery)
        outcome = prepared if isinstance(prepared, str) else self._handle_alone(delivery, *prepared)
        self._count(delivery, outcome, perf_counter() - started)
        return outcome

    def process_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Handle several deliveries in one transaction; return their outcomes, in order.

        Each message is still recorded in the inbox under its own id, so a duplicate in the
        batch (or one processed before) is skipped alone. If the shared transaction fails, it
        rolls back and every message is handled again on its own, with `process`'s retries.
        Raises, like `process`, only when the database is unavailable: `BatchInterrupted`,
        naming the deliveries settled, if some outcomes had committed by then.
        """
        if len(deliveries) == 1:
            return [self.process(deliveries[0])]
        started = perf_counter()
        outcomes: dict[int, Outcome] = {}
        try:
            self._handle_batch(deliveries, outcomes)
        except Exception as exc:
            if not outcomes:
                raise
            # Some outcomes committed (a dead letter, a retry, a message handled alone) before
            # the database failed: the caller acknowledges those, and gives back the rest.
            for index, outcome in outcomes.items():
                self._count(deliveries[index], outcome, 0.0)
            raise BatchInterrupted(sorted(outcomes)) from exc
        seconds = (perf_counter() - started) / len(deliveries)
        for index, delivery in enumerate(deliveries):
            self._count(delivery, outcomes[index], seconds)
        return [outcomes[index] for index in range(len(deliveries))]

    def _handle_batch(self, deliveries: Sequence[Delivery], outcomes: dict[int, Outcome]) -> None:
        """`process_batch`'s work, each outcome put in `outcomes` as soon as it is committed."""
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
                    outcomes[index] = self._handle_alone(deliveries[index], envelope, message)

    # --- checking and decoding -----------------------------------------------------------------

    def _prepare(self, delivery: Delivery) -> Prepared | Outcome:
        """Check and decode a delivery; dead-letter (or drop) it, returning that outcome, if it
        is unfit. Every error but an unavailable database means the delivery is unfit."""
        try:
            return self._check_and_decode(delivery)
        except Exception as exc:
            if database_unavailable(exc):
                raise
            reason = (
                f"refused unread: {exc}"
                if isinstance(exc, MalformedEnvelope)
                else f"cannot decode: {exc}"
                if isinstance(exc, OutboxError)
                else f"cannot read it: {type(exc).__name__}: {str(exc)[:500]}"
            )
            return self._dead(delivery, reason, error=exc)

    def _check_and_decode(self, delivery: Delivery) -> Prepared | Outcome:
        if delivery.routing_key is not None and delivery.routing_key not in self._routing_keys:
            return self._drop(delivery)
        if delivery.unreadable is not None:
            return self._dead(delivery, f"refused unread: {delivery.unreadable}")
        if delivery.undecodable:
            return self._dead(
                delivery,
                "refused unread: its AMQP properties "
                f"{', '.join(delivery.undecodable)} are not UTF-8 text: fix the sender",
            )
        size = len(delivery.body)
        if size > self.max_message_bytes:
            # Kept whole: after the limit is raised, `sagabox dlq replay` delivers it again.
            return self._dead(
                delivery, too_large("the message", size, self.max_message_bytes) + "; kept whole"
            )
        envelope = Envelope.from_wire(delivery.body, delivery.headers, delivery.content_type)
        check_return_address(delivery.headers or {})  # they route replies and faults home
        if not self.endpoint.accepts(envelope.type):
            known = envelope.type in self.endpoint.registry
            return self._dead(
                delivery,
                f"endpoint {self.endpoint.name!r} has no handler for {envelope.type!r}"
                if known
                else f"unknown message type {envelope.type!r}: no class is registered under "
                "that name in this process",
            )
        return envelope, decode(envelope, self.endpoint.registry)

    def _drop(self, delivery: Delivery) -> Outcome:
        log.info(
            "worker: dropped a message that came through routing key %s, which endpoint %r "
            "no longer binds (no handler here takes it)",
            escaped(delivery.routing_key),
            self.endpoint.name,
        )
        return "dropped"

    # --- handling ------------------------------------------------------------------------------

    def _span(self, envelope: Envelope) -> contextlib.AbstractContextManager[Any]:
        """The message's consumer span (None inside when tracing is off)."""
        if not tracing.span_needed(envelope.headers):
            return _NO_SPAN  # a reusable no-op, instead of two generators per message
        return tracing.consuming(
            endpoint=self.endpoint.name,
            message_type=envelope.type,
            message_id=str(envelope.message_id),
            headers=envelope.headers,
        )

    def _handle_alone(self, delivery: Delivery, envelope: Envelope, message: Message) -> Outcome:
        """`_handle` in its trace span; a failure even of the retry bookkeeping dead-letters
        the message, unless the database is unavailable."""
        try:
            with self._span(envelope) as span:
                outcome = self._handle(delivery, envelope, message)
                if span is not None:
                    span.set_attribute("sagabox.outcome", outcome)
                return outcome
        except Exception as exc:
            if database_unavailable(exc):
                raise
            return self._dead(
                delivery, f"failed, and so did its retry: {type(exc).__name__}: {exc}", error=exc
            )

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
        for attempt in range(self.retry.immediate + 1):
            try:
                with self._sessions() as session, session.begin():
                    if not self._dispatch_new(session, envelope, message):
                        _log_duplicate(envelope)
                        return "duplicate"
                failpoint("worker.after_commit")
                return "handled"
            except Unrecoverable as exc:
                return self._dead(delivery, f"unrecoverable: {exc}", error=exc)
            except MessageTooLarge as exc:
                # The same message would emit the same oversized message again.
                return self._dead(delivery, f"its handler emitted a message too large: {exc}")
            except UnstorableText as exc:
                # Likewise: the same message would emit the same key or destination again.
                return self._dead(
                    delivery, f"its handler emitted a message the outbox refused: {exc}"
                )
            except Exception as exc:
                last_error = exc
                if attempt == self.retry.immediate or not retry_at_once(
                    exc, self.retry.retry_at_once
                ):
                    break
                self.stats.retried_at_once += 1
                log.debug(
                    "worker: %s %s: %s; retrying at once", envelope.type, envelope.message_id, exc
                )
        assert last_error is not None
        if database_unavailable(last_error):
            raise last_error  # not the message's fault: back to the queue, and back off
        return self._retry_later(delivery, envelope, last_error)

    def _dispatch_new(self, session: Session, envelope: Envelope, message: Message) -> bool:
        """Record the message in the inbox and, if it is new, dispatch it; False if it was
        processed before. An endpoint that can do both in fewer round trips does it itself
        (`RecordingEndpoint`)."""
        inbox = Inbox(session, self.endpoint.name)
        if self._recording is not None:
            return self._recording.dispatch_new(session, message, inbox)
        if not inbox.record(envelope.message_id):
            return False
        self.endpoint.dispatch(session, message)
        return True

    def _retry_later(self, delivery: Delivery, envelope: Envelope, exc: BaseException) -> Outcome:
        failed = delayed_retry.attempts(envelope.headers) + 1
        if failed > len(self.retry.delays):
            return self._dead(
                delivery,
                f"failed {failed} times; the last error was {type(exc).__name__}: {exc}",
                error=exc,
                attempts=failed,
                first_failed_at=delayed_retry.parse_time(
                    delayed_retry.first_failed(envelope.headers)
                ),
            )
        delayed_retry.schedule_retry(
            self._sessions,
            self.endpoint.name,
            envelope,
            exc,
            failed=failed,
            of=len(self.retry.delays) + 1,
            delay=self.retry.delays[failed - 1],
        )
        return "retry_scheduled"

    # --- dead letters --------------------------------------------------------------------------

    def _dead(
        self,
        delivery: Delivery,
        reason: str,
        *,
        error: BaseException | None = None,
        attempts: int = 1,
        first_failed_at: datetime | None = None,
    ) -> Outcome:
        """Record the delivery as a dead letter (`relay.dead_lettering`): this must succeed
        whatever the message holds; only the database failing raises."""
        dead_letter(
            self._sessions,
            self.endpoint.name,
            delivery,
            reason,
            error=error,
            attempts=attempts,
            first_failed_at=first_failed_at,
        )
        return "dead_lettered"

    # --- reporting -----------------------------------------------------------------------------

    def _count(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
        """Count the outcome, tell the observer, and log the one line each message gets."""
        self.stats.count(outcome)
        headers = delivery.headers if isinstance(delivery.headers, Mapping) else {}
        message_type = headers.get(H_TYPE)
        message_type = message_type if isinstance(message_type, str) else "unreadable"
        self.observer.message_processed(
            endpoint=self.endpoint.name,
            message_type=message_type,
            outcome=outcome,
            seconds=seconds,
        )
        if not log.isEnabledFor(logging.INFO):
            return  # the saga names below are looked up for the log line only
        log_outcome(
            endpoint=self.endpoint.name,
            message_type=message_type,
            headers=headers,
            saga=self._sagas(message_type),
            outcome=outcome,
            seconds=seconds,
        )

    def _sagas(self, message_type: str) -> str | None:
        saga_types_for = getattr(self.endpoint, "saga_types_for", None)
        if saga_types_for is None:
            return None
        names: list[str] = saga_types_for(message_type)
        return ",".join(names) or None


def _log_duplicate(envelope: Envelope) -> None:
    # Rare and telling (a relay or worker crashed mid-way): worth a line.
    log.info(
        "worker: %s %s was processed before; skipped (inbox)", envelope.type, envelope.message_id
    )
