"""The one place sagabox reads the time, so tests can move it (freezegun patches `datetime`)."""

from __future__ import annotations

import datetime as _dt

UTC = _dt.UTC


def now() -> _dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return _dt.datetime.now(UTC)


def ensure_aware(value: _dt.datetime, *, what: str = "datetime") -> _dt.datetime:
    """Return `value` in UTC; refuse naive datetimes, whose meaning depends on the machine."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be timezone-aware (got naive {value.isoformat()}): "
            "pass e.g. datetime(..., tzinfo=UTC) or clock.now() + timedelta(...)"
        )
    return value.astimezone(UTC)
