"""The `sagabox` command line: `db upgrade`, `db current`, and errors that hide passwords."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from outbox import mask_secrets
from outbox.database import make_engine
from sagabox import migrate
from sagabox.cli import main


def test_db_upgrade_creates_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sagabox db upgrade --db URL` creates sagabox's tables; `db current` reports the head."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (tmp_path / "app.db").touch()
    assert 0 == main(["db", "current", "--db", url])
    assert f"none (behind head {migrate.head_revision()}" in capsys.readouterr().out
    assert 0 == main(["db", "upgrade", "--db", url])
    engine = make_engine(url)
    assert set(migrate.TARGET_METADATA.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
    capsys.readouterr()
    assert 0 == main(["db", "current", "--db", url])
    assert f"{migrate.head_revision()} (head)" == capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "command",
    [["dlq", "list"], ["sagas", "list"], ["timeouts", "list"], ["db", "current"]],
    ids=" ".join,
)
def test_a_mistyped_sqlite_path_is_refused_without_creating_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """SQLite creates any file it is pointed at: a typo in --db left an empty database behind
    and answered "no such table". Only `db upgrade` (and `demo`) may create one."""
    typo = tmp_path / "ap.db"
    assert 1 == main([*command, "--db", f"sqlite:///{typo}"])
    error = capsys.readouterr().err
    assert f"there is no SQLite database at {typo}" in error
    assert "sagabox db upgrade" in error
    assert not typo.exists()


@pytest.mark.parametrize("creates", [False, True], ids=["dlq list", "db upgrade"])
def test_a_sqlite_path_sqlite_cannot_open_is_refused_with_what_to_write(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    creates: bool,
) -> None:
    """SQLite expands no '~' and opens no folder: both passed the check (which expanded '~'
    itself) and failed with "unable to open database file"."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    assert 0 == main(["db", "upgrade", "--db", f"sqlite:///{home / 'app.db'}"])
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    command = ["db", "upgrade"] if creates else ["dlq", "list"]
    capsys.readouterr()
    assert 1 == main([*command, "--db", "sqlite:///~/app.db"])
    assert "SQLite does not expand '~'" in capsys.readouterr().err
    assert 1 == main([*command, "--db", f"sqlite:///{home}"])
    assert f"{home} is a folder, not a SQLite database file" in capsys.readouterr().err
    assert [] == list(elsewhere.iterdir())


def test_an_argument_that_is_not_utf8_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes the shell passes that are not UTF-8 arrive as lone surrogates; the driver's
    "codec can't encode" said neither which argument nor what to do."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert 0 == main(["db", "upgrade", "--db", url])
    capsys.readouterr()
    assert 1 == main(["sagas", "show", "shop.Checkout", "O-\udcff", "--db", url])
    error = capsys.readouterr().err
    assert "error: argument correlation_id ('O-\\udcff') is not valid UTF-8 text" in error
    assert "codec" not in error


def test_db_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --db, $SAGABOX_DATABASE_URL names the database."""
    monkeypatch.setenv("SAGABOX_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert 0 == main(["db", "upgrade"])
    assert "env.db" in capsys.readouterr().out


def test_db_upgrade_sql_prints_ddl_for_review(capsys: pytest.CaptureFixture[str]) -> None:
    """`--sql` prints the DDL instead of running it, without touching any server."""
    assert 0 == main(["db", "upgrade", "--sql", "--db", "postgresql://u:pw@nowhere.invalid/db"])
    out = capsys.readouterr().out
    assert "CREATE TABLE sagabox_outbox_messages" in out
    assert "sagabox_alembic_version" in out


def test_failure_is_one_line_without_the_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused login prints one error line, exits 1, and never shows the password."""
    wrong = make_url(postgres_url).set(password="hunter2-secret")
    assert 1 == main(["db", "upgrade", "--db", wrong.render_as_string(hide_password=False)])
    err = capsys.readouterr().err
    assert err.startswith("sagabox: error:")
    assert "hunter2-secret" not in err


def test_console_script_is_installed() -> None:
    """The `sagabox` entry point runs as a program."""
    result = subprocess.run(
        [sys.executable, "-m", "sagabox.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("sagabox ")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("redis://:p%40ss@cache/0", "redis://:***@cache/0"),
        ("amqp://u:p@ss@host//", "amqp://u:***@host//"),
        (
            "failed: postgresql://a:b@h/db and amqp://c:d@h//",
            "failed: postgresql://a:***@h/db and amqp://c:***@h//",
        ),
        ("sqlite:///app.db", "sqlite:///app.db"),
        ("amqp://host//", "amqp://host//"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    """Passwords in any URL, alone or inside a message, become ***; the rest stays readable."""
    assert masked == mask_secrets(text)


def test_ctrl_c_in_a_one_shot_command_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Interrupted (a lock wait, a slow query), a command printed KeyboardInterrupt's
    traceback through the driver's frames."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert 0 == main(["db", "upgrade", "--db", url])
    capsys.readouterr()

    def interrupted(connection: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate, "current_revision", interrupted)
    try:
        code = main(["db", "current", "--db", url])
    except KeyboardInterrupt:  # caught here, so that the rest of the run goes on
        pytest.fail("KeyboardInterrupt escaped the command line")
    assert 130 == code
    error = capsys.readouterr().err
    assert error.startswith("sagabox: interrupted")
    assert 1 == len(error.strip().splitlines())
