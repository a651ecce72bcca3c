"""What saga data may hold: checked before a saga row is written, alike on every database.

A saga's data is stored as JSON, which PostgreSQL's JSONB refuses when a string (or a key)
holds a NUL character or a lone surrogate, failing the commit with a database error that a
worker would retry in vain, while SQLite stores it: tests on SQLite passed and production
failed. Refused here, by name, such data is bad input (a worker dead-letters its message at
once, and the message says which field).
"""

from __future__ import annotations

from typing import Any

from outbox.limits import has_lone_surrogate, shown
from sagas.errors import UnstorableSagaData


def check_data(saga_type: str, correlation_id: str, data: Any) -> None:
    """Raise `UnstorableSagaData` if `data` (as `model_dump(mode="json")` gives it) holds text
    its JSON column cannot store."""
    found = _unstorable(data)
    if found is None:
        return
    path, text, problem = found
    where = "data" + "".join(f"[{part!r}]" for part in reversed(path))
    raise UnstorableSagaData(
        f"{saga_type} {shown(correlation_id)}: {where} {problem}: {shown(text)}; saga data is "
        "stored as JSON, which PostgreSQL refuses with it (SQLite would not): strip it from the "
        "value, or encode the value (base64, say)"
    )


def _unstorable(value: Any) -> tuple[list[object], str, str] | None:
    """The path (innermost first), text and problem of the first string that cannot be
    stored, or None. The path is only built on the way out of a find: most data has none."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return None if problem is None else ([], value, problem)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key)) is not None:
                return ([key], key, f"has a key that {problem}")
            found = _unstorable(item)
            if found is not None:
                found[0].append(key)
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _unstorable(item)
            if found is not None:
                found[0].append(index)
                return found
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character"
    if has_lone_surrogate(text):
        return "holds a lone surrogate (not valid Unicode)"
    return None
