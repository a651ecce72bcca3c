"""`sagabox worker` at start: what can never work exits 1 in one line saying what to fix; what
is only unreachable is waited for; broker connections carry heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection
from sqlalchemy import Engine

from outbox.database import make_engine
from outbox.errors import MissingTables
from relay.broker import HEARTBEAT_SECONDS, connect
from relay.preflight import BrokerMisconfigured, check_broker, check_database
from tests.relay_helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


def _worker(database_url: str, broker_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagabox.cli", "worker", "--app", "tests.bank_app:app", *extra],
        cwd=REPO,
        env={**os.environ, "SAGABOX_DATABASE_URL": database_url, "SAGABOX_BROKER_URL": broker_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("sagabox: error:")]
    assert 1 == len(lines), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _wrong_password(amqp_url: str) -> str:
    url = Connection(amqp_url)
    return f"amqp://{url.userid}:not-the-password@{url.hostname}:{url.port}/{url.virtual_host}"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("once", [False, True], ids=["run", "once"])
def test_an_unknown_broker_scheme_exits_1_at_start(database_url: str, once: bool) -> None:
    """A typo in the scheme was retried forever; now one line names the schemes that work."""
    done = _worker(database_url, "amqps0://localhost//", *(["--once"] if once else []))
    assert 1 == done.returncode
    line = _one_line(done.stderr)
    assert "No such transport: amqps0" in line
    assert "amqp://" in line


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_refused_credentials_exit_1_at_start_without_showing_the_password(
    database_url: str, amqp_url: str
) -> None:
    """RabbitMQ refusing the login (403) is not an outage: say to check the URL's user."""
    done = _worker(database_url, _wrong_password(amqp_url))
    assert 1 == done.returncode
    line = _one_line(done.stderr)
    assert "ACCESS_REFUSED" in line
    assert "check the user, password and virtual host" in line
    assert "not-the-password" not in done.stderr


def test_a_database_without_sagabox_tables_exits_1_at_start(empty_database_url: str) -> None:
    """A database nobody migrated: the line names the missing tables and the command."""
    done = _worker(empty_database_url, "memory://")
    assert 1 == done.returncode
    line = _one_line(done.stderr)
    assert "sagabox_outbox_messages" in line
    assert "sagabox db upgrade" in line


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unreachable_broker_at_start_is_waited_for_and_sigterm_exits_0(
    database_url: str, tmp_path: Path
) -> None:
    """Connection refused is an outage, not a mistake: the worker waits (with backoff) and
    stops cleanly on SIGTERM."""
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sagabox.cli", "worker", "--app", "tests.bank_app:app"],
            cwd=REPO,
            env={
                **os.environ,
                "SAGABOX_DATABASE_URL": database_url,
                "SAGABOX_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//",
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(lambda: "reconnecting in" in log.read_text(), what="a reconnection")
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            assert 0 == process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert "is not reachable yet (" in log.read_text()
    assert "; waiting for it" in log.read_text()


def test_check_broker_tells_misconfiguration_from_an_outage() -> None:
    """The relay's and the worker's one check: None (fine), why not (unreachable: wait), or a
    named error (never works)."""
    assert check_broker("memory://") is None
    not_yet = check_broker("amqp://guest:secret@127.0.0.1:1//", connect_timeout=2)
    assert not_yet is not None
    assert "127.0.0.1:1" in not_yet
    assert "secret" not in not_yet
    with pytest.raises(BrokerMisconfigured, match="No such transport"):
        check_broker("rabbit://localhost//")


def test_check_database(engine: Engine) -> None:
    """A migrated database passes."""
    assert check_database(engine) is None


def test_check_database_names_the_command(empty_database_url: str) -> None:
    """A database without the tables raises `MissingTables` saying how to create them."""
    empty = make_engine(empty_database_url)
    try:
        with pytest.raises(MissingTables, match="sagabox db upgrade"):
            check_database(empty)
    finally:
        empty.dispose()


def test_worker_connections_negotiate_a_heartbeat(amqp_url: str) -> None:
    """RabbitMQ agrees to the worker's heartbeat (it was 0: a dead peer went unnoticed until
    TCP gave up)."""
    with connect(amqp_url, heartbeat=HEARTBEAT_SECONDS) as connection:
        connection.ensure_connection(max_retries=1)
        assert HEARTBEAT_SECONDS == connection.connection.heartbeat
        connection.heartbeat_check()  # what the consume loop calls every turn
