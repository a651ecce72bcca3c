"""Recording a delivery the worker gives up on as a dead letter, whatever the message holds.

The worker's last resort: the full record (reason, error, traceback, headers) and, for a sender
that asked to hear of its message failing, a fault in the same transaction; should that record
fail for anything but the database, a bare one (the raw bytes, the reason in ASCII) instead, so
that no message is lost for being unstorable.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from outbox.dead_letters import record_dead_letter
from outbox.faults import write_fault
from outbox.urls import mask_secrets
from relay.endpoint import Delivery
from relay.failures import database_unavailable
from relay.message_log import escaped

log = logging.getLogger("sagabox.worker")


def dead_letter(
    sessions: Callable[[], Session],
    endpoint: str,
    delivery: Delivery,
    reason: str,
    *,
    error: BaseException | None = None,
    attempts: int = 1,
    first_failed_at: datetime | None = None,
) -> None:
    """Record `delivery` as a dead letter of `endpoint`, each try in a session of `sessions`.

    Only a failure of the bare record, or the database being unavailable, raises."""
    try:
        with sessions() as session, session.begin():
            if record_dead_letter(
                session,
                endpoint=endpoint,
                body=delivery.body,
                headers=delivery.headers,
                content_type=delivery.content_type,
                reason=reason,
                error=f"{type(error).__name__}: {error}" if error is not None else None,
                traceback=_traceback(error),
                attempts=attempts,
                first_failed_at=first_failed_at,
            ):
                # Its sender may watch for it failing: tell it, in the same transaction.
                write_fault(session, endpoint=endpoint, headers=delivery.headers, reason=reason)
    except Exception as exc:
        if database_unavailable(exc):
            raise
        log.error(
            "worker: recording a dead letter failed (%s: %s); recording it bare",
            type(exc).__name__,
            escaped(mask_secrets(exc)),
        )
        with sessions() as session, session.begin():
            record_dead_letter(
                session,
                endpoint=endpoint,
                body=delivery.body,
                headers={"sagabox-unstorable-headers": ascii(delivery.headers)[:10_000]},
                content_type=None,
                reason=ascii(f"{reason} (its headers could not be stored: {exc})"),
                attempts=attempts,
                first_failed_at=first_failed_at,
            )
    log.error("worker: dead-lettered a message: %s", escaped(mask_secrets(reason)))


def _traceback(error: BaseException | None) -> str | None:
    if error is None:
        return None
    try:
        return "".join(traceback.format_exception(error))
    except Exception:  # a hostile exception's __str__ may itself raise
        return None
