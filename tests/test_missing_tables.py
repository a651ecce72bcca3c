"""Using sagabox on a database without its tables says to run `sagabox db upgrade`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outbox import Event, Inbox, MessageRegistry, Outbox
from outbox.database import database_url, missing_table_hint
from sagabox import cli
from sagas import Saga, SagaContext, SagaRuntime, on

HINT = "create sagabox's tables with `sagabox db upgrade --db URL`"
_registry = MessageRegistry()


class ParcelSent(Event, type="tests.missing.ParcelSent", registry=_registry):
    parcel_id: str


class ParcelData(BaseModel):
    pass


class ParcelSaga(Saga[ParcelData], name="tests.missing.Parcel"):
    states = ["new", {"name": "sent", "final": True}]
    transitions = [on(ParcelSent, "new", "sent", after="note")]
    correlation = {ParcelSent: "parcel_id"}

    def note(self, ctx: SagaContext, message: ParcelSent) -> None:
        """Nothing to do: the saga row alone is what fails to be written."""


@pytest.fixture
def service_engine(empty_database_url: str) -> Iterator[Engine]:
    """The service's own engine (plain `create_engine`), on a database sagabox never migrated."""
    engine = create_engine(database_url(empty_database_url))
    yield engine
    engine.dispose()


def _outbox(session: Session) -> None:
    Outbox(session).add(ParcelSent(parcel_id="P-1"))


def _inbox(session: Session) -> None:
    Inbox(session, "parcels").record(uuid.uuid4())


def _saga(session: Session) -> None:
    SagaRuntime([ParcelSaga], endpoint="parcels").start(
        session, ParcelSaga, ParcelSent(parcel_id="P-1")
    )


@pytest.mark.parametrize("use", [_outbox, _inbox, _saga], ids=["outbox", "inbox", "saga"])
def test_a_missing_table_names_the_upgrade_command(
    service_engine: Engine, use: Callable[[Session], None]
) -> None:
    """The outbox writer, the inbox and the saga runtime fail with the hint as the first line,
    and the error keeps its driver class, so retry logic still sees a database error."""
    with pytest.raises(DBAPIError) as raised, Session(service_engine) as session, session.begin():
        use(session)
    first_line = str(raised.value).splitlines()[0]
    assert "sagabox's table sagabox_" in first_line
    assert HINT in first_line


def test_the_service_own_missing_tables_get_no_hint(service_engine: Engine) -> None:
    """A missing table of the service's own is the service's business: its error is unchanged."""
    with pytest.raises(DBAPIError) as raised, service_engine.connect() as connection:
        connection.execute(text("SELECT * FROM parcels_of_mine"))
    assert "sagabox" not in str(raised.value)


def test_the_cli_says_it_in_its_error(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagabox dlq list` on a database without sagabox's tables exits 1 naming the command."""
    url = make_url(empty_database_url)
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).touch()  # a database, only without the tables (a missing file
        # is refused before any table is looked for: see tests/test_cli.py)
    assert 1 == cli.main(["dlq", "list", "--db", empty_database_url])
    assert HINT in capsys.readouterr().err


def test_the_hint_reads_both_dialects_messages() -> None:
    """SQLite's and PostgreSQL's wording (schema-qualified too) are both recognised."""
    assert missing_table_hint(Exception("no such table: sagabox_inbox_messages"))
    assert missing_table_hint(Exception('relation "public.sagabox_saga_instances" does not exist'))
    assert missing_table_hint(Exception("no such table: orders")) is None
