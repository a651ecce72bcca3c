"""What a correlation id may hold: checked once, when a message maps to it, before any query.

A correlation id is stored as text of at most 255 characters (the saga, journal and outbox
columns) and sent as a parameter: PostgreSQL refuses NUL characters and longer values outright,
and no driver can send a lone surrogate. Refused here, such a value is bad input with a named
error (a worker dead-letters its message at once) instead of a database error retried in vain.
"""

from __future__ import annotations

from outbox.limits import has_lone_surrogate, shown, text_problem
from outbox.messages import Message
from sagas.errors import InvalidCorrelationId
from sagas.tables import saga_instances

#: The longest correlation id, in characters: the column's length.
MAX_LENGTH: int = saga_instances.c.correlation_id.type.length  # type: ignore[attr-defined]


def checked(saga_type: str, message: Message, value: str) -> str:
    """`value` when a saga can be stored under it; else `InvalidCorrelationId`, saying why."""
    problem = _problem(value)
    if problem is None:
        return value
    raise InvalidCorrelationId(
        f"{saga_type}: {message.type_name} (message {message.message_id}) maps to a "
        f"correlation id that {problem}: {shown(value)}; a correlation id is text of at most "
        f"{MAX_LENGTH} characters without NUL: fix the sender, or map the message to another "
        "value in the saga's `correlation`"
    )


def _problem(value: str) -> str | None:
    problem = text_problem(value, MAX_LENGTH)
    if problem is not None:
        return problem
    if has_lone_surrogate(value):
        return "is not valid Unicode (a lone surrogate)"
    return None


def storable(value: str) -> bool:
    """Whether a saga can be stored under `value`: reading by one that cannot finds nothing,
    on every database (PostgreSQL would refuse the query itself)."""
    return _problem(value) is None
