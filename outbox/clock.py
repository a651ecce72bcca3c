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


def cutoff(value: _dt.datetime | _dt.timedelta, *, what: str = "older_than") -> _dt.datetime:
    """A point in time given either way: an aware datetime (returned in UTC), or an age, a
    timedelta counted back from now (`older_than=timedelta(days=30)`)."""
    if isinstance(value, _dt.timedelta):
        if value < _dt.timedelta(0):
            raise ValueError(
                f"{what} must not be negative (got {value}): pass an age such as "
                "timedelta(days=30), or an aware datetime"
            )
        return now() - value
    if isinstance(value, _dt.datetime):
        return ensure_aware(value, what=what)
    raise TypeError(
        f"{what} takes an aware datetime or a timedelta (got {type(value).__name__} "
        f"{value!r}): pass e.g. timedelta(days=30) or clock.now() - timedelta(days=30)"
    )
