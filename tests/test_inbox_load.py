"""The unbatched worker's inbox insert and saga read (`sagas.inbox_load`): one statement on
PostgreSQL, two on SQLite, and the same outcomes on both (one contract, subclassed per backend):
a duplicate changes nothing, a new message advances or creates its saga, a rolled-back record
leaves the id new. The saga is the benchmark's counter (`bench.apps`), whose step is the one
this statement was cut for."""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bench.apps import Counted, Counter, Opened, Step
from outbox import Inbox
from outbox.envelope import CONTENT_TYPE, encode
from outbox.messages import Message
from outbox.tables import inbox_messages, outbox_messages
from relay.endpoint import Delivery
from relay.processing import Processor
from sagabox import App
from sagas.inbox_load import record_and_load
from sagas.tables import saga_instances, saga_journal
from tests.test_saga_batches import Statements


def _delivery(message: Message) -> Delivery:
    envelope = encode(message)
    return Delivery(envelope.payload.encode(), envelope.headers, CONTENT_TYPE)


def _count(engine: Engine, table: object, **where: object) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    for column, value in where.items():
        query = query.where(getattr(table, "c")[column] == value)  # noqa: B009
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


class InboxAndLoadContract:
    """What every backend must do; `statements` is what one unbatched step sends there."""

    #: The statements one step of an existing saga sends (besides BEGIN and COMMIT).
    statements: ClassVar[list[str]]

    @pytest.fixture
    def processor(self, engine: Engine, database_url: str) -> Processor:
        app = App("inboxload", sagas=[Counter], inputs=[Opened, Step, Counted])
        app.configure(database=database_url, broker="memory://")
        return Processor(engine, app)

    def test_a_step_records_and_reads_in_the_statements_of_its_backend(
        self, engine: Engine, processor: Processor
    ) -> None:
        """A new message for an existing saga: handled, counted once, with the inbox insert
        and the saga read in one statement on PostgreSQL (two round trips in all)."""
        assert "handled" == processor.process(_delivery(Opened(key="a")))
        step = Step(key="a")
        with Statements(engine) as sent:
            assert "handled" == processor.process(_delivery(step))
        assert self.statements == [s for s in sent.sent if not s.startswith("BEGIN")]
        assert 1 == _count(engine, inbox_messages, message_id=step.message_id)
        assert 1 == _count(engine, saga_journal, message_id=step.message_id)
        assert 1 == _count(engine, outbox_messages, type=Counted.type_name)
        with engine.connect() as connection:
            version = connection.execute(select(saga_instances.c.version)).scalar_one()
        assert 2 == version

    def test_a_duplicate_changes_nothing(self, engine: Engine, processor: Processor) -> None:
        """The same delivery twice: the second is a duplicate, and writes no journal line, no
        message and no saga change."""
        processor.process(_delivery(Opened(key="a")))
        step = _delivery(Step(key="a"))
        assert ["handled", "duplicate"] == [processor.process(step), processor.process(step)]
        with engine.connect() as connection:
            row = connection.execute(select(saga_instances.c.version, saga_instances.c.data)).one()
        assert (2, {"steps": 1}) == (row.version, row.data)
        assert 1 == _count(engine, saga_journal, trigger=Step.type_name)
        assert 1 == _count(engine, outbox_messages, type=Counted.type_name)

    def test_a_message_that_starts_a_saga_creates_it(
        self, engine: Engine, processor: Processor
    ) -> None:
        """No row to read: the statement still records the message, and the saga is created."""
        opened = Opened(key="new")
        assert "handled" == processor.process(_delivery(opened))
        assert 1 == _count(engine, inbox_messages, message_id=opened.message_id)
        assert 1 == _count(engine, saga_instances, correlation_id="new", state="open")

    def test_a_message_without_a_correlation_takes_the_plain_path(
        self, engine: Engine, processor: Processor
    ) -> None:
        """The saga key is unknown before the inbox check: the message fails as it does on the
        plain path (dead-lettered at once, an empty correlation field being bad input), and
        its inbox row rolled back with the attempt."""
        step = Step(key="")
        assert "dead_lettered" == processor.process(_delivery(step))
        assert 0 == _count(engine, inbox_messages, message_id=step.message_id)

    def test_recording_is_exactly_once_and_rolls_back(self, engine: Engine) -> None:
        """An id recorded by a committed transaction is not new again; one recorded by a
        rolled-back transaction is."""
        recorded, rolled_back = uuid.uuid4(), uuid.uuid4()
        with Session(engine) as session, session.begin():
            new, row = record_and_load(
                session, Inbox(session, "c"), recorded, Counter.saga_type, "x"
            )
        assert (True, None) == (new, row)
        with Session(engine) as session:
            record_and_load(session, Inbox(session, "c"), rolled_back, Counter.saga_type, "x")
            session.rollback()
        with Session(engine) as session, session.begin():
            inbox = Inbox(session, "c")
            again = record_and_load(session, inbox, recorded, Counter.saga_type, "x")
            first = record_and_load(session, inbox, rolled_back, Counter.saga_type, "x")
        assert ((False, None), True) == (again, first[0])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestOnSQLite(InboxAndLoadContract):
    """SQLite runs no data-modifying CTE: the inbox insert, the read, then each write."""

    statements: ClassVar[list[str]] = [
        "INSERT INTO sagabox_inbox_messages",
        "SELECT sagabox_saga_instances.id, sagabox_saga_instances.saga_type,",
        "UPDATE sagabox_saga_instances SET",
        "INSERT INTO sagabox_saga_journal",
        "INSERT INTO sagabox_outbox_messages",
    ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
class TestOnPostgreSQL(InboxAndLoadContract):
    """The inbox insert with the read, then the step's writes (`sagas.step_sql`)."""

    statements: ClassVar[list[str]] = ["WITH recorded AS", "WITH u AS"]
