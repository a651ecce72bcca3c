"""A batch's array parameters go to PostgreSQL in the binary format (`outbox.arrays`), and come
back as they went, whatever the text holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from outbox import clock
from outbox.inbox import Inbox
from outbox.tables import outbox_messages
from sagas import batch_sql
from sagas.tables import saga_journal

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _formats(engine: Engine, run: Any) -> dict[str, Format]:
    """The format psycopg dumps each list parameter of the statements `run` sends in."""
    formats: dict[str, Format] = {}

    def record(connection: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        transformer = Transformer(cursor.connection)
        for name, value in parameters.items():
            if isinstance(value, list):
                formats[name] = transformer.get_dumper(value, PyFormat.AUTO).format

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return formats


def test_a_batch_inbox_sends_its_ids_as_a_binary_array(engine: Engine) -> None:
    def run() -> None:
        with Session(engine) as session, session.begin():
            Inbox(session, "c").record_many([uuid4(), uuid4()])

    assert _formats(engine, run) == {"message_ids": Format.BINARY}


def test_a_batch_insert_sends_every_column_as_a_binary_array(engine: Engine) -> None:
    rows = [_outbox_row(f"k{n}", f'{{"n": {n}}}') for n in range(3)]

    def run() -> None:
        with Session(engine) as session, session.begin():
            many = batch_sql.insert_many(outbox_messages, rows)
            assert many is not None
            many[0].rows(session, many[1])

    formats = _formats(engine, run)
    assert set(formats) == set(rows[0])
    assert set(formats.values()) == {Format.BINARY}


def test_a_list_the_user_passes_keeps_psycopgs_own_format(engine: Engine) -> None:
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, psycopg.Connection)
        assert Transformer(raw).get_dumper(["a"], PyFormat.AUTO).format == Format.TEXT


def _outbox_row(key: str, payload: str) -> dict[str, Any]:
    now = clock.now()
    return {
        "message_id": uuid4(), "type": "t", "destination": "d", "partition_key": key,
        "payload": payload, "headers": {"h": key}, "available_at": now, "attempts": 0,
        "created_at": now,
    }  # fmt: skip


# Text PostgreSQL stores: anything but NUL, quotes, braces, commas and backslashes included,
# as an array's text form would have to escape them.
_TEXT = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=20
)
_KEYS = st.lists(_TEXT, min_size=2, max_size=6)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=_KEYS, values=_KEYS)
def test_a_batch_stores_every_text_as_it_was_given(
    engine: Engine, keys: list[str], values: list[str]
) -> None:
    rows = [
        _journal_line(n, key, value)
        for n, (key, value) in enumerate(zip(keys, values, strict=False))
    ]
    with Session(engine) as session, session.begin():
        many = batch_sql.insert_many(saga_journal, rows)
        assert many is not None
        many[0].rows(session, many[1])
        ids = [row["saga_id"] for row in rows]
        stored = session.execute(
            select(saga_journal).where(saga_journal.c.saga_id.in_(ids)).order_by(saga_journal.c.id)
        ).mappings()
        got = [{name: row[name] for name in rows[0]} for row in stored]
        session.rollback()
    assert got == rows


def _journal_line(n: int, key: str, value: str) -> dict[str, Any]:
    return {
        "saga_id": uuid4(), "saga_type": key, "correlation_id": value, "incarnation": uuid4(),
        "version": n, "definition_version": 1, "from_state": None, "to_state": value,
        "trigger": key, "message_id": uuid4(), "outcome": "transition",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
    }  # fmt: skip
