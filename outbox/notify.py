"""The outbox's NOTIFY trigger (PostgreSQL): whether it is on, and turning it off or on.

The trigger (migration 0003) wakes a sleeping relay at once when a transaction writes outbox
rows. It has a price: PostgreSQL makes every transaction that notifies commit one at a time,
waiting for the disk in turn, so many concurrent writers lose the flushes they would have
shared. With 4 writing threads and durable commits they did 0.80-0.86 of their steps/s with it
on (bench (h)). A service bound by its writes can turn it off and let its relays poll more
often instead (`relay --poll-interval`); the state is kept in the database, for every writer.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from outbox.database import check_dialect
from outbox.errors import MissingTables, UnsupportedDatabase
from outbox.tables import outbox_messages

#: The trigger's name, as migration 0003 created it.
TRIGGER = "sagabox_outbox_notify"

#: How long turning the trigger waits for the table: `ALTER TABLE` waits for every open
#: transaction that wrote outbox rows, and every new writer queues behind it meanwhile.
LOCK_TIMEOUT_SECONDS: float = 5

_STATE = text(
    "SELECT tgenabled FROM pg_trigger WHERE tgname = :name AND tgrelid = to_regclass(:table)"
)
_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")
_CURRENT_LOCK_TIMEOUT = text("SELECT current_setting('lock_timeout')")


def _table(connection: Connection) -> str:
    """The outbox table's name as this connection's statements reach it: schema-qualified
    when the connection maps sagabox's tables to a schema (`schema_translate_map`)."""
    preparer = connection.dialect.identifier_preparer
    mapping = connection.get_execution_options().get("schema_translate_map") or {}
    schema = mapping.get(outbox_messages.schema)
    table = preparer.quote(outbox_messages.name)
    return table if schema is None else f"{preparer.quote_schema(schema)}.{table}"


def notify_trigger(connection: Connection) -> bool | None:
    """Whether the outbox's NOTIFY trigger fires for the service's writes: None where there is
    none (SQLite, whose relays poll, or tables before migration 0003)."""
    if check_dialect(connection.dialect.name) != "postgresql":
        return None
    state = connection.execute(_STATE, {"name": TRIGGER, "table": _table(connection)}).scalar()
    # 'O' fires in ordinary sessions (the default) and 'A' always; 'D' never, and 'R' only in
    # replication sessions, which the service's writers are not.
    return None if state is None else state in ("O", "A")


def set_notify_trigger(connection: Connection, *, enabled: bool) -> None:
    """Turn the outbox's NOTIFY trigger on or off, in the caller's transaction (it needs the
    table's owner). Where there is none, raise an error that says why (`UnsupportedDatabase`
    on SQLite, `MissingTables` before migration 0003); a table held by open transactions for
    `LOCK_TIMEOUT_SECONDS` raises `TimeoutError`, rather than hold up every writer."""
    if notify_trigger(connection) is None:
        if connection.dialect.name != "postgresql":
            raise UnsupportedDatabase(
                f"{connection.dialect.name} has no NOTIFY trigger to turn on or off: its relays "
                "poll (relay --poll-interval), and a commit in a relay's own process wakes it"
            )
        raise MissingTables(
            "the outbox has no NOTIFY trigger: bring sagabox's tables to the head revision with "
            "`sagabox db upgrade`"
        )
    verb = "ENABLE" if enabled else "DISABLE"
    before = connection.execute(_CURRENT_LOCK_TIMEOUT).scalar_one()
    connection.execute(_LOCK_TIMEOUT, {"timeout": f"{round(LOCK_TIMEOUT_SECONDS * 1000)}ms"})
    try:
        # Identifiers, not values: the table's (quoted, from the engine's configuration) and
        # this module's constants; nothing comes from input.
        connection.execute(text(f"ALTER TABLE {_table(connection)} {verb} TRIGGER {TRIGGER}"))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise TimeoutError(
            f"the outbox table stayed locked for {LOCK_TIMEOUT_SECONDS} s by open transactions "
            "(writers mid-transaction, or one left idle): nothing changed; try again, and look "
            "for sessions 'idle in transaction' if it persists"
        ) from exc
    connection.execute(_LOCK_TIMEOUT, {"timeout": before})  # the caller's, for what follows
