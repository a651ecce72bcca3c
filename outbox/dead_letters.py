"""Dead letters: messages an endpoint gave up on, kept with the reason until someone acts.

Nothing here talks to a broker. Recording happens in the worker's transaction; `replay` moves a
dead letter back into the outbox, addressed to its endpoint only, so the relay ships it again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, select

from outbox import clock
from outbox.database import Executor, insert_ignoring_conflicts
from outbox.envelope import CONTENT_TYPE, H_CORRELATION_ID, H_MESSAGE_ID, H_TYPE, Envelope
from outbox.errors import OutboxError
from outbox.sync_only import refuse_async_call
from outbox.tables import dead_letters as t
from outbox.urls import mask_secrets
from outbox.writer import Outbox

#: Headers the worker's retry bookkeeping adds; a replay starts the count afresh.
H_ATTEMPTS = "sagabox-attempts"
H_FIRST_FAILED_AT = "sagabox-first-failed-at"
RETRY_HEADERS = (H_ATTEMPTS, H_FIRST_FAILED_AT)
#: Set on a dead letter's stored headers when some could not be kept as they came (bytes that
#: are not text, a value too long, too many headers): its value names them. Such a letter is
#: not replayed, since the message sent again would not be the one that failed.
H_ALTERED = "x-sagabox-dead-letter-altered"
_MAX_HEADERS = 100

# Text columns hold at most this much of an error; the traceback says the rest.
_MAX_TEXT = 10_000


class DeadLetterNotFound(OutboxError):
    """No dead letter has this id."""


class NotReplayable(OutboxError):
    """This dead letter cannot be replayed as it is; discard it instead."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message with everything known about its failure."""

    id: int
    endpoint: str
    message_id: UUID | None
    type: str | None
    content_type: str | None
    headers: dict[str, str]
    body: bytes
    reason: str
    error: str | None
    traceback: str | None
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


def record_dead_letter(
    executor: Executor,
    *,
    endpoint: str,
    body: bytes,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    reason: str,
    error: str | None = None,
    traceback: str | None = None,
    attempts: int = 1,
    first_failed_at: datetime | None = None,
) -> bool:
    """Store a message the endpoint gives up on; False if this message was dead-lettered already.

    Headers are kept as text (a hostile message can carry anything in them) and errors are
    masked, so a password in a URL inside an exception never lands in the table. Every text is
    made storable first (lone surrogates and NUL escaped), so recording cannot fail on what
    the message holds; `body` keeps the raw bytes.
    """
    now = clock.now()
    clean = _text_headers(headers)
    inserted = executor.execute(
        insert_ignoring_conflicts(executor, t)
        .values(
            endpoint=endpoint,
            message_id=_uuid_or_none(clean.get(H_MESSAGE_ID)),
            type=_short(clean.get(H_TYPE)),
            content_type=_short(content_type),
            headers=clean,
            body=body,
            reason=_clip(mask_secrets(_text(reason))),
            error=_clip(mask_secrets(_text(error))) if error is not None else None,
            traceback=_clip(mask_secrets(_text(traceback))) if traceback is not None else None,
            attempts=attempts,
            first_failed_at=first_failed_at or now,
            last_failed_at=now,
        )
        .returning(t.c.id)
    ).first()
    return inserted is not None


def list_dead_letters(
    executor: Executor, *, endpoint: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    """The oldest dead letters first, optionally of one endpoint."""
    refuse_async_call(executor, "list_dead_letters")
    query = select(t).order_by(t.c.id).limit(limit)
    if endpoint is not None:
        query = query.where(t.c.endpoint == endpoint)
    return [DeadLetter(**row._mapping) for row in executor.execute(query)]


def get_dead_letter(executor: Executor, dead_letter_id: int) -> DeadLetter:
    """One dead letter by id, or `DeadLetterNotFound`."""
    refuse_async_call(executor, "get_dead_letter")
    row = executor.execute(select(t).where(t.c.id == dead_letter_id)).first()
    if row is None:
        raise DeadLetterNotFound(
            f"no dead letter has id {dead_letter_id}: `sagabox dlq list` shows the ones there are"
        )
    return DeadLetter(**row._mapping)


def replay_dead_letter(executor: Executor, dead_letter_id: int) -> UUID:
    """Move a dead letter back into the outbox, addressed to its endpoint; return its message id.

    The message keeps its id, so an endpoint that did process it after all skips it again.
    """
    refuse_async_call(executor, "replay_dead_letter")
    letter = get_dead_letter(executor, dead_letter_id)
    envelope = _replayable(letter)
    # Deleted first: of two replays at once (two browser tabs) the second waits on the row's
    # lock and then finds it gone, rather than queueing the message a second time.
    _take(executor, dead_letter_id)
    Outbox(executor).add_envelope(
        envelope,
        destination=letter.endpoint,
        partition_key=envelope.headers.get(H_CORRELATION_ID),
    )
    return envelope.message_id


def discard_dead_letter(executor: Executor, dead_letter_id: int) -> None:
    """Delete a dead letter for good."""
    refuse_async_call(executor, "discard_dead_letter")
    get_dead_letter(executor, dead_letter_id)
    _take(executor, dead_letter_id)


def _take(executor: Executor, dead_letter_id: int) -> None:
    """Delete the letter, or `DeadLetterNotFound` if another transaction just did."""
    taken = executor.execute(delete(t).where(t.c.id == dead_letter_id).returning(t.c.id)).all()
    if not taken:
        raise DeadLetterNotFound(
            f"dead letter {dead_letter_id} was replayed or discarded meanwhile (by another "
            "operator or tab): nothing more to do; `sagabox dlq list` shows the ones left"
        )


def _replayable(letter: DeadLetter) -> Envelope:
    if letter.content_type != CONTENT_TYPE:
        raise NotReplayable(
            f"dead letter {letter.id} has content type {letter.content_type!r}; only "
            f"{CONTENT_TYPE} messages can be replayed. Discard it with `sagabox dlq discard`"
        )
    if H_ALTERED in letter.headers:
        raise NotReplayable(
            f"dead letter {letter.id} cannot be replayed: some of its headers could not be "
            "kept as they came (not text, escaped, cut short or left out: "
            f"{letter.headers[H_ALTERED]}), so the message sent again "
            "would not be the one that failed. Discard it with `sagabox dlq discard`, and have "
            "the sender publish a corrected message"
        )
    headers = {k: v for k, v in letter.headers.items() if k not in RETRY_HEADERS}
    try:
        envelope = Envelope.from_wire(letter.body, headers, letter.content_type)
        json.loads(envelope.payload)
    except (OutboxError, ValueError) as exc:
        raise NotReplayable(
            f"dead letter {letter.id} cannot be replayed ({exc}). Discard it with "
            "`sagabox dlq discard`, and have the sender publish a corrected message"
        ) from exc
    return envelope


def _text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        return {}
    clean: dict[str, str] = {}
    altered: list[str] = []
    items = list(headers.items())
    for key, value in items[:_MAX_HEADERS]:
        text = value if isinstance(value, str) else repr(value)
        name = key if isinstance(key, str) else repr(key)
        stored_name, stored = _text(name)[:255], _clip(_text(text))
        clean[stored_name] = stored
        if (stored_name, stored) != (key, value) and key not in RETRY_HEADERS:
            altered.append(stored_name)
    if len(items) > _MAX_HEADERS:
        altered.append(f"{len(items) - _MAX_HEADERS} more headers, left out")
    if altered:
        clean[H_ALTERED] = _clip(", ".join(altered))
    return clean


def _text(value: object) -> str:
    """`value` as text any database stores: lone surrogates (py-amqp's `surrogatepass`
    decoding of broken bytes) backslash-escaped, and NUL, which PostgreSQL refuses, escaped."""
    text = value if isinstance(value, str) else repr(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def _uuid_or_none(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


def _short(value: str | None) -> str | None:
    return _text(value)[:255] if value is not None else None


def _clip(text: str) -> str:
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + " […]"
