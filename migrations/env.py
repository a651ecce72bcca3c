"""Alembic environment for sagabox's own tables; run through `sagabox db upgrade`.

It keeps its own version table, so it never mixes with a service's own Alembic history.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from outbox.database import make_engine
from sagabox.migrate import TARGET_METADATA, VERSION_TABLE

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=TARGET_METADATA,
        version_table=VERSION_TABLE,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    """Print the SQL instead of running it (`sagabox db upgrade --sql`), for a DBA to review."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    # The caller's connection: the caller owns (and commits) its transaction.
    run_online(given)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=NullPool)
    with engine.begin() as connection:
        run_online(connection)
    engine.dispose()
