"""A failed message's delayed retry: a copy in the outbox, addressed to this endpoint alone.

The copy carries how many times the message failed and when it first did (`H_ATTEMPTS`,
`H_FIRST_FAILED_AT`), so the retries' count and the dead letter's dates survive restarts and
any number of workers; the relay delivers it once its delay has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from outbox import clock
from outbox.dead_letters import H_ATTEMPTS, H_FIRST_FAILED_AT
from outbox.envelope import H_CORRELATION_ID, Envelope
from outbox.urls import mask_secrets
from outbox.writer import Outbox

log = logging.getLogger("sagabox.worker")


def attempts(headers: Mapping[str, str]) -> int:
    """How many times the message failed before (0 for a first delivery or a bad header)."""
    try:
        return max(int(headers.get(H_ATTEMPTS, "0")), 0)
    except ValueError:
        return 0


def first_failed(headers: Mapping[str, str]) -> str:
    """When the message first failed, as its header says, or now."""
    return headers.get(H_FIRST_FAILED_AT) or clock.now().isoformat()


def parse_time(text: str) -> datetime | None:
    """`text` as an aware time, or None when it is not one (a header written by hand)."""
    try:
        return clock.ensure_aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def schedule_retry(
    sessions: Callable[[], Session],
    endpoint: str,
    envelope: Envelope,
    error: BaseException,
    *,
    failed: int,
    of: int,
    delay: timedelta,
) -> None:
    """Write the retry of `envelope`, its `failed`-th failure of `of` tries, due after `delay`."""
    headers = {
        **envelope.headers,
        H_ATTEMPTS: str(failed),
        H_FIRST_FAILED_AT: first_failed(envelope.headers),
    }
    with sessions() as session, session.begin():
        # Addressed to this endpoint's name, so the other subscribers of an event are not
        # handed it again.
        Outbox(session).add_envelope(
            Envelope(envelope.type, envelope.version, envelope.payload, headers),
            destination=endpoint,
            partition_key=headers.get(H_CORRELATION_ID),
            deliver_at=clock.now() + delay,
        )
    log.warning(
        "worker: %s %s failed (attempt %d of %d: %s: %s); retrying in %s",
        envelope.type,
        envelope.message_id,
        failed,
        of,
        type(error).__name__,
        mask_secrets(error),
        delay,
    )
