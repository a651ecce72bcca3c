"""The errors a user meets first: one readable line that says what to do, and no password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from outbox.urls import mask_secrets
from sagabox.cli import main

SECRET = "hunter2-secret"


def _error(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    """Run the command line, expect exit 1, return its one-line error."""
    assert 1 == main(list(arguments))
    err = capsys.readouterr().err
    assert 1 == len(err.strip().splitlines()), err
    assert err.startswith("sagabox: error:")
    assert SECRET not in err
    return err


def test_a_port_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in the port is named as such, with what a URL looks like, not `int()` text."""
    err = _error(capsys, "db", "current", "--db", f"postgresql://app:{SECRET}@db:54x2/app")
    assert "its port '54x2' is not a number" in err
    assert "postgresql://user@host:5432/dbname" in err
    assert "invalid literal" not in err


def test_a_sqlite_file_in_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite's "unable to open database file" becomes the folder that does not exist."""
    missing = tmp_path / "no" / "such"
    err = _error(capsys, "db", "upgrade", "--db", f"sqlite:///{missing / 'app.db'}")
    assert f"the folder {missing} does not exist" in err
    assert not missing.exists()


def test_an_unparseable_url(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "sagas", "list", "--db", "app.db")
    assert "is not a database URL" in err


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_once_with_an_unreachable_broker_is_one_line(
    database_url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--once` with no broker listening: one line naming the broker (masked), no traceback."""
    broker = f"amqp://guest:{SECRET}@127.0.0.1:1//"
    arguments = ["--once", "--db", database_url, "--broker", broker]
    if command == "worker":
        arguments += ["--app", "tests.bank_app:app"]
    err = _error(capsys, command, *arguments)
    assert "amqp://guest:***@127.0.0.1:1//" in err
    assert "Connection refused" in err


@pytest.mark.rabbitmq
def test_once_with_a_wrong_broker_password_is_one_line(
    database_url: str, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A login the broker refuses is one line, and the password given is not in it."""
    wrong = make_url(amqp_url.replace("amqp://", "sqlite://", 1)).set(password=SECRET)
    broker = wrong.render_as_string(hide_password=False).replace("sqlite://", "amqp://", 1)
    err = _error(capsys, "relay", "--once", "--db", database_url, "--broker", broker)
    assert "refused the login" in err  # the relay's start-up check names what to fix


def test_app_not_found_names_the_folder_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--app` naming a module that is not there says where sagabox looked."""
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, "graph", "--app", "myservice.endpoint:app")
    assert "no module 'myservice'" in err
    assert str(tmp_path) in err
    assert "PYTHONPATH" in err


def test_app_attribute_not_found_names_the_module_file(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "graph", "--app", "tests.bank_app:no_such_app")
    assert "has no attribute 'no_such_app'" in err
    assert "bank_app.py" in err


def test_sagas_show_with_an_unknown_type_says_so(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown saga type is named as the problem, not the id."""
    err = _error(capsys, "sagas", "show", "NoSuchSaga", "O-1", "--db", database_url)
    assert "no saga of type 'NoSuchSaga'" in err


def test_sagas_list_with_an_unknown_type_exits_non_zero(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagas list --type NoSuch` is an error (a typo must not look like an empty list)."""
    err = _error(capsys, "sagas", "list", "--type", "NoSuch", "--db", database_url)
    assert "no saga of type 'NoSuch'" in err


def test_metrics_port_without_the_extra_names_the_pip_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without prometheus_client, `--metrics-port` says `pip install 'sagabox[metrics]'`."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sagabox.metrics", raising=False)
    arguments = ["--once", "--db", database_url, "--broker", "memory://", "--metrics-port", "0"]
    err = _error(capsys, "relay", *arguments)
    assert "pip install 'sagabox[metrics]'" in err


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "postgresql://app@db/x?password=s3cret&sslmode=require",
            "postgresql://app@db/x?password=***&sslmode=require",
        ),
        ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password='s3 cr\\'et' port=5432", "host=db password=*** port=5432"),
        ("conninfo: PASSWORD = s3cret", "conninfo: PASSWORD = ***"),
        ("the password was right", "the password was right"),
    ],
)
def test_mask_secrets_in_query_parameters_and_libpq_strings(text: str, masked: str) -> None:
    """Passwords given as `?password=` or as libpq `key=value` become *** as well."""
    assert masked == mask_secrets(text)


@pytest.mark.postgres
def test_a_wrong_sagabox_db_password_is_never_printed(postgres_url: str, tmp_path: Path) -> None:
    """`pytest --sagabox-db URL` with a wrong password fails in one line without the password."""
    (tmp_path / "test_service.py").write_text(
        "from sagabox import App\n\n\n"
        "def test_harness(saga_harness):\n"
        "    saga_harness(App('billing'))\n"
    )
    wrong = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sagabox-db", wrong],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert 1 == done.returncode, output
    assert "cannot create a scratch database there" in output
    assert SECRET not in output
