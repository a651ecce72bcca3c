"""The outbox's NOTIFY trigger (PostgreSQL): whether it is on, and turning it off or on.

The trigger (migration 0003) wakes a sleeping relay at once when a transaction writes outbox
rows. It has a price: PostgreSQL makes every transaction that notifies commit one at a time,
waiting for the disk in turn, so many concurrent writers lose the flushes they would have
shared. With 4 writing threads and durable commits they did 0.80-0.86 of their steps/s with it
on (bench (h)). A service bound by its writes can turn it off and let its relays poll more
often instead (`relay --poll-interval`); the state is kept in the database, for every writer.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, text

from outbox.database import check_dialect
from outbox.errors import MissingTables, UnsupportedDatabase
from outbox.tables import outbox_messages

#: The trigger's name, as migration 0003 created it.
TRIGGER = "sagabox_outbox_notify"

_STATE = text(
    "SELECT tgenabled FROM pg_trigger WHERE tgname = :name AND tgrelid = to_regclass(:table)"
).bindparams(bindparam("name", TRIGGER), bindparam("table", outbox_messages.name))


def notify_trigger(connection: Connection) -> bool | None:
    """Whether the outbox's NOTIFY trigger is on: None where there is none (SQLite, whose
    relays poll, or tables not yet at migration 0003)."""
    if check_dialect(connection.dialect.name) != "postgresql":
        return None
    state = connection.execute(_STATE).scalar()
    # 'D' is disabled; 'O' (origin, the default), 'R' and 'A' fire in some replication role.
    return None if state is None else state != "D"


def set_notify_trigger(connection: Connection, *, enabled: bool) -> None:
    """Turn the outbox's NOTIFY trigger on or off, in the caller's transaction (it needs the
    table's owner). Where there is none, raise an error that says why (`UnsupportedDatabase`
    on SQLite, `MissingTables` before migration 0003)."""
    if notify_trigger(connection) is None:
        if connection.dialect.name != "postgresql":
            raise UnsupportedDatabase(
                f"{connection.dialect.name} has no NOTIFY trigger to turn on or off: its relays "
                "poll (relay --poll-interval), and a commit in a relay's own process wakes it"
            )
        raise MissingTables(
            "the outbox has no NOTIFY trigger: create sagabox's tables with `sagabox db upgrade`"
        )
    table = connection.dialect.identifier_preparer.quote(outbox_messages.name)
    verb = "ENABLE" if enabled else "DISABLE"
    # Identifiers, not values: both are this module's constants, quoted; nothing comes from input.
    connection.execute(text(f"ALTER TABLE {table} {verb} TRIGGER {TRIGGER}"))
