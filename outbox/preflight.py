"""Checking at start that a database has sagabox's tables, so a daemon fails fast if not.

A daemon pointed at the wrong database (or one nobody migrated) would otherwise log the same
error and retry forever, while a liveness probe sees a live process.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, Table, inspect
from sqlalchemy.exc import SQLAlchemyError

from outbox.errors import MissingTables
from outbox.tables import dead_letters, inbox_messages, outbox_messages
from outbox.urls import mask_secrets

#: What every relay and worker reads and writes.
REQUIRED = (outbox_messages, inbox_messages, dead_letters)


def check_tables(engine: Engine, tables: Iterable[Table] = REQUIRED) -> bool:
    """True if the database has `tables`; False if it cannot be reached now (wait and retry);
    `MissingTables`, saying which command creates them, if it is reachable without them."""
    try:
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
    except SQLAlchemyError:
        return False
    missing = sorted(table.name for table in tables if table.name not in present)
    if missing:
        url = mask_secrets(engine.url.render_as_string(hide_password=True))
        raise MissingTables(
            f"database {url} has no table {', '.join(missing)}: create sagabox's tables with "
            "`sagabox db upgrade --db URL` (or check that --db names the right database)"
        )
    return True
