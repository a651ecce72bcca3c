"""What the relay does with a row the broker did not take: try it again later, or give up on it.

A failed row keeps its place in the outbox with one more attempt counted and a later due time
(`delay * 2**attempts`, at most 64 times `delay`). While it waits, the rows behind it in its
partition key wait too (`outbox.claim` skips them), so a key's messages still arrive in order.
After `max_attempts`, or at once when retrying cannot help, the row becomes a dead letter of its
destination, replayable with `sagabox dlq replay`, and the rows behind it go on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from outbox.claim import delete_rows, postpone_rows
from outbox.dead_letters import record_dead_letter
from outbox.envelope import CONTENT_TYPE
from relay.publisher import Failure

log = logging.getLogger("sagabox.relay")


@dataclass(frozen=True)
class RowRetryPolicy:
    """How often and how patiently the relay retries a row before dead-lettering it."""

    max_attempts: int = 10
    delay: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (got {self.max_attempts})")
        if self.delay <= timedelta(0):
            raise ValueError(f"the retry delay must be positive (got {self.delay})")

    def next_try(self, now: datetime, attempts_before: int) -> datetime:
        """When a row that has failed `attempts_before` times, and once more now, is due again."""
        factor: int = 2 ** min(attempts_before, 6)
        return now + self.delay * factor


@dataclass(frozen=True)
class Settled:
    """How many failed rows were kept for a later try, and how many were dead-lettered."""

    retried: int = 0
    dead_lettered: int = 0


def settle_failures(
    connection: Connection,
    failures: Sequence[Failure],
    *,
    now: datetime,
    policy: RowRetryPolicy,
    exchange: str,
) -> Settled:
    """Postpone or dead-letter each failed row, in the relay's transaction."""
    retried = dead = 0
    for failure in failures:
        row = failure.row
        attempt = row.attempts + 1
        if failure.retryable and attempt < policy.max_attempts:
            until = policy.next_try(now, row.attempts)
            postpone_rows(connection, [row.id], until=until)
            retried += 1
            log.warning(
                "relay: %s %s to %r on exchange %r failed (attempt %d of %d), trying again at "
                "%s: %s",
                row.type,
                row.message_id,
                row.destination,
                exchange,
                attempt,
                policy.max_attempts,
                until.isoformat(),
                failure.reason,
            )
            continue
        gave_up = "cannot be retried" if not failure.retryable else f"gave up after {attempt} tries"
        reason = f"relay: {failure.reason} ({gave_up})"
        # The destination is the endpoint: `sagabox dlq replay` sends it there again.
        recorded = record_dead_letter(
            connection,
            endpoint=row.destination,
            body=row.payload.encode("utf-8", "surrogatepass"),
            headers=row.headers,
            content_type=CONTENT_TYPE,
            reason=reason,
            attempts=attempt,
        )
        delete_rows(connection, [row.id])
        dead += 1
        if not recorded:
            # The same message is a dead letter of this endpoint already: that one stands for it.
            log.warning("relay: %s %s was a dead letter already", row.type, row.message_id)
        log.error(
            "relay: dead-lettered %s %s to %r: %s; `sagabox dlq list` shows it and "
            "`sagabox dlq replay` sends it again once the cause is fixed",
            row.type,
            row.message_id,
            row.destination,
            reason,
        )
    return Settled(retried=retried, dead_lettered=dead)
