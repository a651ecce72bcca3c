"""The relay: ships due outbox rows to the broker and deletes them once the broker has them.

One batch is one database transaction: claim due rows, publish them, wait for the broker's
confirms, delete the rows it confirmed, commit. A crash anywhere before the commit leaves the
rows in place and they are published again (the consumers' inbox drops the duplicates); a row is
never deleted unless the broker has it. A row the broker does not take (unroutable, nacked,
refused) is retried on its own and dead-lettered at last (`relay.retries`), while the rest of
its batch ships. A lost broker or database rolls the batch back; the relay backs off and
reconnects.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from time import perf_counter

from kombu import Connection
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from outbox import clock
from outbox.claim import claim_due, delete_rows, next_due
from outbox.notify import notify_trigger
from outbox.urls import mask_secrets
from relay.backoff import Backoff
from relay.broker import DEFAULT_EXCHANGE, broker_errors, connect, describe
from relay.failpoints import failpoint
from relay.observe import NOOP, Observer
from relay.preflight import wait_until_ready
from relay.publisher import Publisher
from relay.retries import RowRetryPolicy, settle_failures
from relay.wakeup import Wakeup

log = logging.getLogger("sagabox.relay")


@dataclass
class RelayStats:
    """Counters since the relay started."""

    published: int = 0
    batches: int = 0
    #: Rows the broker had no queue for (each attempt counts).
    unroutable: int = 0
    #: Batches rolled back (broker or database unavailable).
    failures: int = 0
    #: Rows the broker did not take, kept for a later try.
    retried: int = 0
    #: Rows given up on, now dead letters.
    dead_lettered: int = 0


class Relay:
    """Moves outbox rows to the broker; `run` loops until stopped, `drain` empties what is due.

    `listen` wakes the relay on PostgreSQL notifications and on commits in this process, with
    `poll_interval` as the safety net; scheduled rows wake it when they fall due. A row the
    broker does not take is tried `max_attempts` times in all, `retry_delay` apart at first and
    twice as long each time, then dead-lettered.
    """

    def __init__(
        self,
        engine: Engine,
        broker_url: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        listen: bool = True,
        confirm_timeout: float = 30.0,
        retry_delay: timedelta = timedelta(seconds=5),
        max_attempts: int = 10,
        observer: Observer = NOOP,
        unroutable_delay: timedelta | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
        self.engine = engine
        self.broker_url = broker_url
        self.exchange = exchange
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.listen = listen
        self.confirm_timeout = confirm_timeout
        # `unroutable_delay` is the name `retry_delay` had when only unroutable rows were kept.
        self.retry_policy = RowRetryPolicy(
            max_attempts=max_attempts, delay=unroutable_delay or retry_delay
        )
        self.stats = RelayStats()
        self.observer = observer
        self._connection: Connection | None = None
        self._publisher: Publisher | None = None
        self._stopping = threading.Event()
        self._wakeup = Wakeup()
        #: Set while `run` sleeps with nothing due: what tests and health checks wait for.
        self.idle = threading.Event()

    def publish_batch(self) -> int:
        """Ship one batch of due rows in one transaction; return how many rows it claimed."""
        publisher = self._connected()
        started = perf_counter()
        now = clock.now()
        with self.engine.begin() as connection:
            rows = claim_due(connection, now=now, limit=self.batch_size)
            if not rows:
                return 0
            outcome = publisher.publish(rows)
            failpoint("relay.after_publish")
            delete_rows(connection, [row.id for row in outcome.confirmed])
            settled = settle_failures(
                connection,
                outcome.failed,
                now=now,
                policy=self.retry_policy,
                exchange=self.exchange,
            )
        failpoint("relay.after_commit")
        unroutable = sum(1 for failure in outcome.failed if failure.kind == "unroutable")
        self.stats.batches += 1
        self.stats.published += len(outcome.confirmed)
        self.stats.unroutable += unroutable
        self.stats.retried += settled.retried
        self.stats.dead_lettered += settled.dead_lettered
        self.observer.relay_batch(
            published=len(outcome.confirmed),
            unroutable=unroutable,
            seconds=perf_counter() - started,
        )
        if outcome.failed:
            self.observer.relay_rows_failed(
                retried=settled.retried, dead_lettered=settled.dead_lettered
            )
        # Rows held behind a failed row of their key stay, and are not due work for `drain`.
        return len(rows) - len(outcome.held)

    def drain(self) -> int:
        """Publish batches until nothing is due; return how many rows were shipped or kept.

        A row the broker did not take is due again only after its retry delay, so `drain`
        returns rather than spin on it.
        """
        total = 0
        while True:
            claimed = self.publish_batch()
            total += claimed
            if claimed == 0:
                return total

    def run(self) -> None:
        """Ship rows until `stop()` is called; errors roll back, back off and reconnect."""
        backoff = Backoff()
        if self.listen:
            if self._notify_trigger_off():
                log.info(
                    "relay: the outbox's NOTIFY trigger is off (`sagabox db notify on` turns it "
                    "on): polling every %s s",
                    self.poll_interval,
                )
            else:
                self._wakeup.listen(self.engine)
            self._wakeup.watch_commits()
        log.info(
            "relay: shipping %s to %s (exchange %r, batches of %d)",
            mask_secrets(self.engine.url),
            describe(self.broker_url),
            self.exchange,
            self.batch_size,
        )
        try:
            while not self._stopping.is_set():
                try:
                    claimed = self.publish_batch()
                    idle = self._idle_timeout() if claimed == 0 else 0.0
                except Exception as exc:
                    self.stats.failures += 1
                    self.observer.relay_failed(exc)
                    self._disconnect()
                    delay = backoff.next_delay()
                    log.warning(
                        "relay: batch rolled back (%s: %s); retrying in %.2f s",
                        type(exc).__name__,
                        mask_secrets(exc),
                        delay,
                    )
                    self._stopping.wait(delay)
                    continue
                backoff.reset()
                if idle > 0:
                    self.idle.set()
                    self._wakeup.wait(idle)
                    self.idle.clear()
        finally:
            self._wakeup.close()
            self._disconnect()
            # The stop is spent: `run` may be called again (a stop before it still counts).
            self._stopping.clear()
        log.info("relay: stopped after publishing %d messages", self.stats.published)

    def check_settings(self, *, wait: bool = True) -> bool:
        """Before `run`: raise `Misconfigured` for settings that can never work, wait for a
        database or broker that is not up yet (or, with `wait=False`, raise what said it is
        not); False if `stop()` came first."""
        return wait_until_ready(self.engine, self.broker_url, stopping=self._stopping, wait=wait)

    def stop(self) -> None:
        """Ask `run` to return after the batch in flight (safe from a signal handler); a stop
        before `run` makes it return at once. The relay can run again afterwards."""
        self._stopping.set()
        self._wakeup.set()

    def close(self) -> None:
        """Release the broker connection."""
        self._disconnect()

    def _notify_trigger_off(self) -> bool:
        """Whether the outbox's NOTIFY trigger is known to be off (`sagabox db notify`), so
        that listening would only hold a connection. Unknown (the database is not up yet)
        counts as on: the listener then waits the outage out like the relay."""
        if self.engine.dialect.name != "postgresql":
            return False
        try:
            with self.engine.connect() as connection:
                return notify_trigger(connection) is False
        except SQLAlchemyError:
            return False

    def _idle_timeout(self) -> float:
        """Sleep until the poll interval ends or the next scheduled row falls due."""
        now = clock.now()
        with self.engine.connect() as connection:
            due = next_due(connection, after=now)
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max((due - now).total_seconds(), 0.0))

    def _connected(self) -> Publisher:
        if self._publisher is None:
            self._connection = connect(self.broker_url)
            self._publisher = Publisher(
                self._connection, self.exchange, confirm_timeout=self.confirm_timeout
            )
        return self._publisher

    def _disconnect(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.release()
            except broker_errors(connection):
                pass
