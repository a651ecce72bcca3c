"""The outbox's NOTIFY trigger can be turned off and on again (`sagabox db notify`), for
services whose concurrent writers it slows (bench (h)); a relay started while it is off polls,
without holding a LISTEN connection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from outbox import Outbox, notify, notify_trigger, set_notify_trigger
from outbox.errors import MissingTables, UnsupportedDatabase
from relay import Relay
from sagabox.cli import main
from tests.bank_app import Deposited
from tests.pg_helpers import copy_into_schema
from tests.relay_helpers import wait_for
from tests.test_relay import _listening_backends

postgresql_only = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def heard(engine: Engine) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection LISTENing on the relay's channel."""
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("LISTEN sagabox_outbox")
        yield connection


def _notified_by_a_write(engine: Engine, listening: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether writing an outbox row notified: a marker sent after its commit arrives after
    any notification of that commit (PostgreSQL delivers them in commit order), so the wait
    ends at the marker rather than at a timeout."""
    with engine.begin() as connection:
        Outbox(connection).add(Deposited(account="a", amount=1))
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_notify('sagabox_outbox', 'marker')"))
    payloads = []
    for notification in listening.notifies(timeout=10):
        payloads.append(notification.payload)
        if notification.payload == "marker":
            break
    assert payloads[-1:] == ["marker"], payloads
    return len(payloads) > 1


@postgresql_only
def test_off_a_write_notifies_nobody_and_on_again_it_does(
    engine: Engine, heard: psycopg.Connection[tuple[object, ...]]
) -> None:
    with engine.connect() as connection:
        assert notify_trigger(connection) is True  # on after `db upgrade`: the default
    assert _notified_by_a_write(engine, heard)
    with engine.begin() as connection:
        set_notify_trigger(connection, enabled=False)
    with engine.connect() as connection:
        assert notify_trigger(connection) is False
    assert not _notified_by_a_write(engine, heard)
    with engine.begin() as connection:
        set_notify_trigger(connection, enabled=True)
    assert _notified_by_a_write(engine, heard)


@postgresql_only
def test_the_command_shows_and_turns_the_trigger(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 0 == main(["db", "notify", "--db", database_url])
    assert capsys.readouterr().out.startswith("on: ")
    assert 0 == main(["db", "notify", "off", "--db", database_url])
    assert capsys.readouterr().out.startswith("off: ")
    with engine.connect() as connection:
        assert notify_trigger(connection) is False
    assert 0 == main(["db", "notify", "--db", database_url])
    assert capsys.readouterr().out.startswith("off: ")
    assert 0 == main(["db", "notify", "on", "--db", database_url])
    assert capsys.readouterr().out.startswith("on: ")


@postgresql_only
def test_a_table_held_by_an_open_writer_times_out_and_holds_up_nobody(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`ALTER TABLE` waits for every open transaction that wrote outbox rows, and new writers
    queue behind it: it gives up after a lock timeout instead, changing nothing, and leaves
    the caller's own lock timeout as it was."""
    monkeypatch.setattr(notify, "LOCK_TIMEOUT_SECONDS", 0.2)
    with engine.connect() as writer:
        with writer.begin():
            Outbox(writer).add(Deposited(account="a", amount=1))  # open, holding the table
            with engine.connect() as connection:
                locked = pytest.raises(TimeoutError, match=r"stayed locked for 0\.2 s")
                with locked, connection.begin():
                    set_notify_trigger(connection, enabled=False)
                assert 1 == main(["db", "notify", "off", "--db", database_url])
        error = capsys.readouterr().err
        assert error.startswith("sagabox: error: the outbox table stayed locked")
        assert 1 == len(error.strip().splitlines())
    with engine.begin() as connection:
        assert notify_trigger(connection) is True  # unchanged
        set_notify_trigger(connection, enabled=False)
        assert "0" == connection.execute(text("SELECT current_setting('lock_timeout')")).scalar()


@postgresql_only
def test_a_trigger_firing_only_in_replication_sessions_counts_as_off(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("ALTER TABLE sagabox_outbox_messages ENABLE REPLICA TRIGGER sagabox_outbox_notify")
        )
        assert notify_trigger(connection) is False
        set_notify_trigger(connection, enabled=True)
        assert notify_trigger(connection) is True


@postgresql_only
def test_tables_mapped_to_another_schema_are_the_ones_turned(engine: Engine) -> None:
    """An engine mapping sagabox's tables to a schema (`schema_translate_map`) turns that
    schema's trigger, not one the search path finds."""
    with engine.begin() as connection:
        copy_into_schema(connection, "sagabox_outbox_messages")
        connection.execute(
            text("CREATE TRIGGER sagabox_outbox_notify AFTER INSERT ON "
                 "elsewhere.sagabox_outbox_messages "
                 "FOR EACH STATEMENT EXECUTE FUNCTION sagabox_outbox_notify()")
        )  # fmt: skip
    mapped = engine.execution_options(schema_translate_map={None: "elsewhere"})
    with mapped.begin() as connection:
        set_notify_trigger(connection, enabled=False)
        assert notify_trigger(connection) is False
    with engine.connect() as connection:
        assert notify_trigger(connection) is True  # the public schema's is untouched


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_has_no_trigger_to_turn(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as connection:
        assert notify_trigger(connection) is None
        with pytest.raises(UnsupportedDatabase, match="relays poll"):
            set_notify_trigger(connection, enabled=False)
    assert 1 == main(["db", "notify", "off", "--db", database_url])
    error = capsys.readouterr().err
    assert error.startswith("sagabox: error: sqlite has no NOTIFY trigger")
    assert 1 == len(error.strip().splitlines())
    assert 0 == main(["db", "notify", "--db", database_url])
    assert capsys.readouterr().out.startswith("none: sqlite has no NOTIFY; relays poll")


@postgresql_only
def test_a_database_without_the_trigger_says_to_upgrade(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from outbox.database import make_engine

    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            assert notify_trigger(connection) is None
            with pytest.raises(MissingTables, match="sagabox db upgrade"):
                set_notify_trigger(connection, enabled=False)
    finally:
        engine.dispose()
    assert 0 == main(["db", "notify", "--db", empty_database_url])
    assert capsys.readouterr().out.startswith("none: no outbox NOTIFY trigger here (run `sagabox")


@postgresql_only
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_relay_started_while_it_is_off_polls_without_listening(
    engine: Engine, broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.begin() as connection:
        set_notify_trigger(connection, enabled=False)
    relay = Relay(engine, broker_url, poll_interval=0.05)
    thread = threading.Thread(target=relay.run)
    with caplog.at_level(logging.INFO, logger="sagabox"):
        thread.start()
        try:
            wait_for(relay.idle.is_set, what="the relay to idle")
            assert 0 == _listening_backends(engine)
            with engine.begin() as connection:
                Outbox(connection).add(Deposited(account="a", amount=1))
            wait_for(lambda: relay.stats.published == 1, what="the poll to ship the row")
        finally:
            relay.stop()
            thread.join(timeout=10)
    assert "NOTIFY trigger is off" in caplog.text
