"""What the dashboard's query strings and action forms say, parsed and bounded: a value no
saga, timeout or dead letter can have is a `ValueError` that says what to write instead."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from outbox import clock
from sagas.timeout_admin import FURTHEST_MOVE

#: Dead-letter ids are 64-bit: a larger number from a URL or a form names no letter.
MAX_ID = 2**63 - 1
#: No saga field holds a NUL (PostgreSQL's text cannot), so a NUL in a query names nothing.
NUL = "\x00"
NUL_REFUSED = "a NUL character is in no type, state, id or reason: remove it and try again"


def minutes(text: str) -> timedelta | None:
    """A search's age in minutes, or None when left empty; at most `FURTHEST_MOVE`, past which
    `now - age` would leave the range of a datetime."""
    text = text.strip()
    if not text:
        return None
    try:
        count = float(text)
    except ValueError:
        raise ValueError(f"age {text[:40]!r} is not a number of minutes") from None
    if not 0 <= count <= FURTHEST_MOVE.total_seconds() / 60:  # NaN too: it compares false
        raise ValueError(
            f"age {text[:40]!r} is out of range: give a number of minutes from 0 to "
            f"{FURTHEST_MOVE.total_seconds() / 60:.0f} (100 years)"
        )
    return timedelta(minutes=count)


def due_time(text: str) -> datetime:
    """A reschedule form's time: minutes from now ("+30"), or an ISO time (UTC if no zone)."""
    text = text.strip()
    hint = "write +30 (minutes from now) or 2026-12-24T09:00"
    if text.startswith("+"):
        try:
            offset = float(text[1:])
        except ValueError:
            offset = math.nan
        if not math.isfinite(offset):
            raise ValueError(f"{text[:40]!r} is not a time: {hint}")
        if abs(offset) > FURTHEST_MOVE.total_seconds() / 60:
            raise ValueError(f"{text[:40]!r} is too far from now: move it by 100 years at most")
        return clock.now() + timedelta(minutes=offset)  # bounded above: the sum stays a datetime
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a time: {hint}") from None
    # How far it may be is `reschedule_timeout`'s to refuse, for the CLI and callers alike.
    return value if value.tzinfo is not None else value.replace(tzinfo=clock.UTC)


def created(text: str) -> datetime | None:
    """An age search cursor's creation time, as the next page link writes it (ISO, UTC)."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"after_created {text[:40]!r} is not an ISO time: follow the page's next link"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=clock.UTC)


def letter_id(text: str) -> int:
    """A dead-letter form's id: a number a letter can have."""
    try:
        number = int(text.strip())
    except ValueError:
        raise ValueError(f"dead letter id {text[:40]!r} is not a number") from None
    if not 0 < number <= MAX_ID:
        raise ValueError(f"no dead letter has id {number}: ids are 64-bit numbers above 0")
    return number
