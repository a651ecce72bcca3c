"""The README's Alembic option 2 inside a real project made by `alembic init`, on each backend.

Every command a service runs (upgrade, revision --autogenerate, check, current, downgrade) runs
as the user runs it, as a process, with the README's lines in the generated env.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from outbox.database import make_engine
from sagabox import migrate

README = Path(__file__).resolve().parent.parent / "README.md"

#: The service's own model, in place of the generated `target_metadata = None`.
MODEL = """\
from sqlalchemy import Column, Integer, MetaData, String, Table

target_metadata = MetaData()
Table(
    "widgets",
    target_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50)),
)
"""


def _readme_env_lines() -> tuple[str, str]:
    """The README's import line and its `run_migrations_online`, as written there."""
    section = README.read_text().split("2. Or migrate both in one transaction", 1)[1]
    block = textwrap.dedent(re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0])
    imports, function = block.split("\n\n\n", 1)
    return imports.strip() + "\n", function.strip() + "\n"


def _alembic(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(project: Path, *arguments: str) -> str:
    done = _alembic(project, *arguments)
    assert 0 == done.returncode, f"alembic {' '.join(arguments)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _make_project(tmp_path: Path, url: str) -> Path:
    project = tmp_path / "service"
    project.mkdir()
    _ok(project, "init", "alembic")
    ini = project / "alembic.ini"
    ini.write_text(
        re.sub(
            r"^sqlalchemy\.url = .*$",
            lambda _m: "sqlalchemy.url = " + url.replace("%", "%%"),
            ini.read_text(),
            flags=re.MULTILINE,
        )
    )
    env = project / "alembic" / "env.py"
    source = env.read_text()
    imports, function = _readme_env_lines()
    assert "target_metadata = None\n" in source
    source = source.replace("target_metadata = None\n", MODEL)
    source = source.replace(
        "from alembic import context\n", f"from alembic import context\n{imports}"
    )
    start = source.index("def run_migrations_online")
    end = source.index("if context.is_offline_mode()")
    env.write_text(source[:start] + function + "\n\n" + source[end:])
    return project


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _revisions(project: Path) -> list[Path]:
    return sorted((project / "alembic" / "versions").glob("*.py"))


def test_the_readme_alembic_lines_work_in_a_generated_project(
    empty_database_url: str, tmp_path: Path
) -> None:
    """upgrade migrates both histories; autogenerate, check, current and downgrade work and
    leave sagabox's tables alone."""
    project = _make_project(tmp_path, empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        _ok(project, "revision", "--autogenerate", "-m", "widgets")
        assert not any(name.startswith("sagabox_") for name in _tables(engine)), (
            "autogenerate must not create sagabox's tables"
        )
        (widgets,) = _revisions(project)
        first = widgets.read_text()
        assert "op.create_table('widgets'" in first or 'op.create_table("widgets"' in first
        assert "sagabox_" not in first

        _ok(project, "upgrade", "head")
        tables = _tables(engine)
        assert {"widgets", "alembic_version", migrate.VERSION_TABLE} <= tables
        assert {str(name) for name in migrate.TARGET_METADATA.tables} <= tables
        with engine.connect() as connection:
            assert migrate.head_revision() == migrate.current_revision(connection)

        assert "No new upgrade operations detected" in _ok(project, "check")
        assert "(head)" in _ok(project, "current")

        _ok(project, "revision", "--autogenerate", "-m", "nothing")
        (empty,) = set(_revisions(project)) - {widgets}
        assert "op." not in empty.read_text(), "nothing changed: nothing may be proposed"
        empty.unlink()

        _ok(project, "downgrade", "-1")
        tables = _tables(engine)
        assert "widgets" not in tables
        assert {str(name) for name in migrate.TARGET_METADATA.tables} <= tables, (
            "the service's downgrade must leave sagabox's tables"
        )
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_upgrade_on_a_plain_connection_still_migrates(empty_database_url: str) -> None:
    """Outside any Alembic environment, `upgrade(connection)` migrates (and the caller commits)."""
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
        assert migrate.VERSION_TABLE in _tables(engine)
    finally:
        engine.dispose()
