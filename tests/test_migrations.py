"""sagabox's Alembic migrations: applied in order they give exactly the tables in `metadata`."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from outbox.database import make_engine
from sagabox import migrate


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": migrate.VERSION_TABLE}
        )
        return list(compare_metadata(context, migrate.TARGET_METADATA))


def test_upgrade_head_equals_metadata(empty_database_url: str) -> None:
    """On an empty database, `upgrade head` yields no autogenerate difference from `metadata`."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert [] == _diff(engine)
        with engine.connect() as connection:
            assert migrate.current_revision(connection) is not None
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_every_table(empty_database_url: str) -> None:
    """Every migration can be undone: down to base, only Alembic's version table is left."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            migrate.downgrade(connection, "base")
        assert [migrate.VERSION_TABLE] == inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_upgrade_inside_the_callers_transaction_rolls_back_with_it(
    empty_database_url: str,
) -> None:
    """Given a connection, the upgrade joins the caller's transaction and does not commit it."""
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            migrate.upgrade(connection)
            assert "sagabox_outbox_messages" in inspect(connection).get_table_names()
            transaction.rollback()
        assert "sagabox_outbox_messages" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_service_autogenerate_filter_hides_sagabox_tables() -> None:
    """The include_name hook for a service's env.py skips our tables and keeps its own."""
    assert migrate.exclude_sagabox_tables("sagabox_outbox_messages", "table", {}) is False
    assert migrate.exclude_sagabox_tables("loans", "table", {}) is True
    assert migrate.exclude_sagabox_tables("sagabox_x", "column", {}) is True
