"""Applying sagabox's own Alembic migrations, from the CLI or from a service's own env.py."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

from alembic import command
from alembic import context as alembic_context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from outbox.database import database_url, make_engine
from outbox.tables import PREFIX, metadata
from sagas import tables as _saga_tables  # noqa: F401 - puts the saga tables on `metadata`

#: Every sagabox table, as the migrations must create them.
TARGET_METADATA = metadata

#: sagabox's revisions are tracked apart from the service's own Alembic history.
VERSION_TABLE = f"{PREFIX}alembic_version"


def script_location() -> str:
    """Where the migration scripts are, whether installed from a wheel or from a checkout."""
    return str(files("sagabox.migrations"))


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic `Config` for sagabox's migrations; no ini file needed."""
    config = Config()
    config.set_main_option("script_location", script_location())
    if url is not None:
        rendered = database_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(target: str | URL | Connection, revision: str = "head") -> None:
    """Bring sagabox's tables up to `revision`.

    Given a URL, it runs in a transaction of its own and commits. Given a `Connection`, it runs
    in the caller's transaction and leaves the commit to the caller: call it from a service's own
    Alembic env.py to migrate both in one go. There it acts only when the service's command is
    `alembic upgrade`: `revision --autogenerate`, `check`, `current`, `downgrade` and `stamp` run
    the same env.py, and must not touch sagabox's tables.
    """
    if isinstance(target, Connection) and _outer_environment_is_not_upgrading():
        return
    _run(command.upgrade, target, revision)


def downgrade(target: str | URL | Connection, revision: str) -> None:
    """Take sagabox's tables back down to `revision` (`"base"` removes them all)."""
    _run(command.downgrade, target, revision)


def _run(
    step: Callable[[Config, str], None], target: str | URL | Connection, revision: str
) -> None:
    if isinstance(target, Connection):
        config = alembic_config()
        config.attributes["connection"] = target
        with _outer_environment_kept():
            step(config, revision)
        return
    engine = make_engine(target, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            _run(step, connection, revision)
    finally:
        engine.dispose()


def _outer_environment() -> Any:
    """The service's Alembic `EnvironmentContext` this runs inside, or None outside any."""
    # `alembic.context` is a module proxy to the environment running now (Alembic's own state).
    return getattr(alembic_context, "_proxy", None)


def _outer_environment_is_not_upgrading() -> bool:
    outer = _outer_environment()
    if outer is None:
        return False
    step = outer.context_opts.get("fn")
    # `alembic upgrade` runs env.py with the step function `alembic.command.upgrade` defines.
    upgrading = getattr(step, "__module__", None) == command.__name__ and (
        getattr(step, "__name__", None) == "upgrade"
    )
    return not upgrading


@contextmanager
def _outer_environment_kept() -> Iterator[None]:
    """Run sagabox's own Alembic environment nested in a service's, and give the service's back.

    Leaving an `EnvironmentContext` clears `alembic.context`; without this the service's
    env.py fails right after (`KeyError: 'script'`, `KeyError: 'config'`).
    """
    outer = _outer_environment()
    try:
        yield
    finally:
        if outer is not None:
            outer._install_proxy()


def upgrade_sql(url: str | URL, revision: str = "head") -> str:
    """Return the SQL that `upgrade` would run on an empty database, for review by a DBA."""
    buffer = io.StringIO()
    config = alembic_config(url)
    config.output_buffer = buffer
    command.upgrade(config, revision, sql=True)
    return buffer.getvalue()


def current_revision(connection: Connection) -> str | None:
    """The sagabox revision the database is at, or None before the first upgrade."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def head_revision() -> str:
    """The newest revision this version of sagabox ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def exclude_sagabox_tables(name: str | None, type_: str, parent_names: Any) -> bool:
    """An Alembic `include_name` hook that hides sagabox's tables from a service's autogenerate.

    Use it in the service's env.py: `context.configure(..., include_name=exclude_sagabox_tables)`,
    so `alembic revision --autogenerate` never proposes to drop or alter them.
    """
    return not (type_ == "table" and name is not None and name.startswith(PREFIX))
