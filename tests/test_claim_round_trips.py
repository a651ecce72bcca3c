"""The relay's claim sends no statement it does not need: an idle relay claims after every
batch and before it sleeps, so each round trip there is latency on commit -> broker."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select

from outbox import Outbox, clock
from outbox.claim import claim_due
from outbox.tables import outbox_messages
from relay import Relay
from tests.subscription_app import Started


def _statements(engine: Engine, limit: int) -> tuple[int, int]:
    """(statements sent, rows claimed) by one claim in its own transaction."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as connection:
            rows = claim_due(connection, now=clock.now(), limit=limit)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent), len(rows)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_empty_outbox_costs_the_claim_one_statement(engine: Engine) -> None:
    """Nothing due: one SELECT, not a second one in id order that cannot find more."""
    assert (1, 0) == _statements(engine, 500)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_due_row_is_still_claimed(engine: Engine) -> None:
    """The claim still finds what is due, with the partition check a keyed row needs in the
    same statement (it was a second one, a round trip per batch)."""
    with engine.begin() as connection:
        Outbox(connection).add(Started(sub_id="due"), destination="subs", partition_key="k")
    assert (1, 1) == _statements(engine, 500)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_relay_batch_sends_the_claim_and_the_delete_only(
    engine: Engine, memory_broker: str
) -> None:
    """A batch of keyed events (nobody subscribes: shipped all the same) costs two statements
    besides BEGIN and COMMIT: the claim (with its partition check) and the delete, which also
    relaxes that transaction's commit (`SET LOCAL synchronous_commit` was a statement of its
    own); the session keeps its own setting after the commit."""
    with engine.begin() as connection:
        outbox = Outbox(connection)
        for n in range(3):
            outbox.add(Started(sub_id=f"s{n}"), partition_key=f"k{n % 2}")  # events
    engine.dispose()  # new connections, durable by their session setting whatever the server's
    event.listen(engine, "connect", _durable_session)
    sent: list[str] = []
    at_commit: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    def commit(connection: Connection) -> None:
        at_commit.append(_setting(connection.connection.dbapi_connection))

    relay = Relay(engine, memory_broker, batch_size=10)
    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", commit)
    try:
        assert 3 == relay.publish_batch()
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine, "commit", commit)
        relay.close()
    assert 2 == len(sent), sent
    assert sent[1].startswith("DELETE")
    assert ["off"] == at_commit
    with engine.connect() as connection:
        assert "on" == _setting(connection.connection.dbapi_connection)
        assert 0 == connection.execute(select(func.count()).select_from(outbox_messages)).scalar()


def _durable_session(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO on")
    cursor.close()
    dbapi_connection.commit()


def _setting(dbapi_connection: Any) -> str:
    """synchronous_commit as the connection sees it, read past SQLAlchemy's events."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SHOW synchronous_commit")
    value = str(cursor.fetchone()[0])
    cursor.close()
    return value
