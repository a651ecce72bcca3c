"""`outbox.prebuilt`: a hot statement sent through the DBAPI cursor gives what `execute` gives
(the same values, processed by the same column types), fails with the same errors, and leaves the
full path to engines whose statements something listens to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, bindparam, event, literal, select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from outbox.prebuilt import Prebuilt
from sagas.tables import saga_instances
from tests.pg_helpers import copy_into_schema
from tests.test_saga_batches import Statements

_ROW = select(literal(7).label("seven"), *saga_instances.c).where(
    saga_instances.c.correlation_id == bindparam("b_key")
)


def _insert(session: Session, key: str) -> None:
    now = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)
    session.execute(
        saga_instances.insert().values(
            id=uuid.uuid4(), saga_type="t", correlation_id=key, incarnation=uuid.uuid4(),
            state="s", data={"n": [1, "x"]}, version=3, created_at=now, updated_at=now,
            timeouts=None,
        )
    )  # fmt: skip


def test_a_row_comes_back_as_execute_gives_it(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        _insert(session, "a")
        expected = dict(session.execute(_ROW, {"b_key": "a"}).mappings().one())
        got = Prebuilt(_ROW).first(session, {"b_key": "a"})
        assert expected == got
        assert got is not None
        assert isinstance(got["id"], uuid.UUID)
        assert {"n": [1, "x"]} == got["data"]
        assert got["created_at"].tzinfo is not None  # UTCDateTime's own processing
        assert None is Prebuilt(_ROW).first(session, {"b_key": "nobody"})


def test_one_statement_serves_many_calls(engine: Engine) -> None:
    """What the first result said (its columns, whether there are rows) serves the calls
    after it: rows, no row and a statement with no result, in any order, as `execute` gives."""
    row = Prebuilt(_ROW)
    touch = Prebuilt(
        text("UPDATE sagabox_saga_instances SET version = version + 1 WHERE correlation_id = :k")
    )
    with Session(engine) as session, session.begin():
        assert row.first(session, {"b_key": "d"}) is None
        _insert(session, "d")
        _insert(session, "e")
        for key in ("d", "e", "nobody", "d"):
            expected = session.execute(_ROW, {"b_key": key}).mappings().first()
            assert (None if expected is None else dict(expected)) == row.first(
                session, {"b_key": key}
            )
        assert touch.first(session, {"k": "d"}) is None
        assert touch.first(session, {"k": "d"}) is None
        got = row.first(session, {"b_key": "d"})
        assert got is not None
        assert 5 == got["version"]


def test_it_runs_in_the_sessions_transaction(engine: Engine) -> None:
    """What it writes rolls back with the session; what the session wrote, it sees."""
    insert = text("INSERT INTO sagabox_inbox_messages (consumer, message_id, processed_at) "
                  "VALUES (:c, :m, :at) RETURNING message_id").bindparams(
        bindparam("m", type_=saga_instances.c.id.type)
    )  # fmt: skip
    message_id = uuid.uuid4()
    with Session(engine) as session, session.begin():
        _insert(session, "b")
        assert Prebuilt(_ROW).first(session, {"b_key": "b"}) is not None
        now = datetime.now(UTC)
        assert Prebuilt(insert).first(session, {"c": "x", "m": message_id, "at": now})
        session.rollback()
    with Session(engine) as session:
        assert Prebuilt(_ROW).first(session, {"b_key": "b"}) is None
        count = text("SELECT count(*) AS n FROM sagabox_inbox_messages")
        assert {"n": 0} == Prebuilt(count).first(session, {})


def test_an_error_is_sqlalchemys_with_the_missing_table_hint(engine: Engine) -> None:
    missing = text("SELECT * FROM sagabox_no_such_table")
    with Session(engine) as session, pytest.raises(DBAPIError) as raised:
        Prebuilt(missing).first(session, {})
    assert isinstance(raised.value, ProgrammingError) or "no such table" in str(raised.value)
    assert "sagabox db upgrade" in str(raised.value)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # a server drops it
def test_a_dropped_connection_is_invalidated(engine: Engine) -> None:
    """The worker tells an outage from a poison message by `connection_invalidated`."""
    with Session(engine) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            Prebuilt(_ROW).first(session, {"b_key": "a"})
    assert raised.value.connection_invalidated


def test_listeners_see_every_statement(engine: Engine) -> None:
    """An engine with cursor-execute listeners (instrumentation, tests counting statements)
    gets the full execute path, so that none of its statements goes unseen."""
    seen: list[str] = []
    with Session(engine) as session, session.begin():
        _insert(session, "c")
        with Statements(engine) as statements:
            assert Prebuilt(_ROW).first(session, {"b_key": "c"}) is not None

        def record(*arguments: object) -> None:
            seen.append(str(arguments[2]))

        event.listen(engine, "after_cursor_execute", record)
        try:
            Prebuilt(_ROW).first(session, {"b_key": "c"})
        finally:
            event.remove(engine, "after_cursor_execute", record)
    assert 1 == statements.count("SELECT")
    assert 1 == len(seen)


def test_a_sessions_execute_listeners_see_it_too(engine: Engine) -> None:
    seen: list[object] = []
    with Session(engine) as session, session.begin():
        _insert(session, "d")
        event.listen(session, "do_orm_execute", lambda state: seen.append(state.statement))
        assert Prebuilt(_ROW).first(session, {"b_key": "d"}) is not None
    assert [_ROW] == seen


def test_a_closed_driver_connection_fails_as_sqlalchemys_error(engine: Engine) -> None:
    """Even before the statement is sent (opening the cursor), the error is SQLAlchemy's."""
    with Session(engine) as session:
        session.connection().connection.dbapi_connection.close()  # type: ignore[union-attr]
        with pytest.raises(DBAPIError):
            Prebuilt(_ROW).first(session, {"b_key": "a"})


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # schemas: PostgreSQL's
def test_a_schema_translate_map_is_honoured(engine: Engine) -> None:
    """An engine that maps sagabox's tables to another schema reads and writes them there: the
    prebuilt SQL names no schema, so it would read the default schema's table instead."""
    with engine.begin() as connection:
        copy_into_schema(connection, "sagabox_saga_instances")
    translated = engine.execution_options(schema_translate_map={None: "elsewhere"})
    with Session(translated) as session, session.begin():
        _insert(session, "e")
        expected = dict(session.execute(_ROW, {"b_key": "e"}).mappings().one())
        assert expected == Prebuilt(_ROW).first(session, {"b_key": "e"})


def test_on_a_connection_it_begins_the_transaction_execute_would(engine: Engine) -> None:
    """On a connection nothing ran on yet, what it writes commits with the connection: it sent
    the statement behind SQLAlchemy's back, so `commit` found no transaction and did nothing,
    and the row went when the pool rolled the connection back."""
    insert = text("INSERT INTO sagabox_inbox_messages (consumer, message_id, processed_at) "
                  "VALUES (:c, :m, :at) RETURNING message_id").bindparams(
        bindparam("m", type_=saga_instances.c.id.type)
    )  # fmt: skip
    with engine.connect() as connection:
        parameters = {"c": "x", "m": uuid.uuid4(), "at": datetime.now(UTC)}
        assert Prebuilt(insert).first(connection, parameters) is not None
        connection.commit()
    with engine.connect() as connection:
        count = text("SELECT count(*) FROM sagabox_inbox_messages")
        assert 1 == connection.execute(count).scalar_one()


def test_rows_come_back_as_execute_gives_them(engine: Engine) -> None:
    """Every row, as tuples in the statement's order, processed by the same column types."""
    every = select(*saga_instances.c).order_by(saga_instances.c.correlation_id)
    with Session(engine) as session, session.begin():
        for key in ("r1", "r2", "r3"):
            _insert(session, key)
        expected = [tuple(row) for row in session.execute(every)]
        got = Prebuilt(every).rows(session, {})
        assert expected == got
        assert 3 == len(got)
        assert isinstance(got[0][0], uuid.UUID)
        created_at = list(saga_instances.c.keys()).index("created_at")
        assert got[0][created_at].tzinfo is not None  # UTCDateTime's own processing
        assert [] == Prebuilt(_ROW).rows(session, {"b_key": "nobody"})


def test_a_statement_without_rows_runs_and_gives_none(engine: Engine) -> None:
    """A DELETE (the relay's, of shipped rows): it runs in the transaction, and gives no rows,
    through the cursor as through the full path a listened engine takes."""
    gone = saga_instances.delete().where(saga_instances.c.correlation_id == bindparam("b_key"))
    with Session(engine) as session, session.begin():
        for key in ("d1", "d2"):
            _insert(session, key)
        assert [] == Prebuilt(gone).rows(session, {"b_key": "d1"})
        with Statements(engine) as statements:
            assert [] == Prebuilt(gone).rows(session, {"b_key": "d2"})
        assert 1 == statements.count("DELETE")
        assert None is Prebuilt(_ROW).first(session, {"b_key": "d1"})
        assert None is Prebuilt(_ROW).first(session, {"b_key": "d2"})


def test_rows_on_a_listened_engine_take_the_full_path(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        _insert(session, "l1")
        expected = Prebuilt(_ROW).rows(session, {"b_key": "l1"})
        with Statements(engine) as statements:
            assert expected == Prebuilt(_ROW).rows(session, {"b_key": "l1"})
    assert 1 == statements.count("SELECT")
