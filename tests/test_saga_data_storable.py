"""Saga data that its JSON column cannot store (a NUL character, a lone surrogate) is refused
by name before the write, alike on SQLite (which would store it) and PostgreSQL (which failed
the commit with a database error, retried in vain); a worker dead-letters its message at once.
Reading a saga by an id no saga can have finds none, on every database."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox import Event
from sagabox import App
from sagas import Saga, SagaContext, SagaRuntime, UnstorableSagaData, on
from sagas.tables import saga_instances
from tests.relay_helpers import through_one_worker


class NoteOpened(Event, type="storabletest.NoteOpened"):
    key: str
    note: str


class NoteAdded(Event, type="storabletest.NoteAdded"):
    key: str
    note: str


class Notes(BaseModel):
    first: str = ""
    more: dict[str, list[str]] = {}


class NoteTaker(Saga[Notes], name="storabletest.NoteTaker"):
    states = ["new", "open"]
    transitions = [
        on(NoteOpened, "new", "open", after="keep_first"),
        on(NoteAdded, "open", None, after="keep_more"),
    ]
    correlation = {NoteOpened: "key", NoteAdded: "key"}

    def keep_first(self, ctx: SagaContext, message: NoteOpened) -> None:
        self.data.first = message.note

    def keep_more(self, ctx: SagaContext, message: NoteAdded) -> None:
        self.data.more.setdefault("notes", []).append(message.note)


runtime = SagaRuntime([NoteTaker], endpoint="notes")


def _sagas(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(saga_instances)) or 0)


@pytest.mark.parametrize(
    ("note", "problem"),
    [("x\x00y", "holds a NUL character"), ("x\udcffy", "holds a lone surrogate")],
    ids=["NUL", "lone surrogate"],
)
def test_unstorable_data_is_refused_by_name_and_nothing_is_written(
    engine: Engine, note: str, problem: str
) -> None:
    with Session(engine) as session, session.begin():
        with pytest.raises(UnstorableSagaData, match=rf"data\['first'\] {problem}"):
            runtime.start(session, NoteTaker, NoteOpened(key="k", note=note))
        runtime.start(session, NoteTaker, NoteOpened(key="k2", note="fine"))
    assert 1 == _sagas(engine)
    refused = pytest.raises(UnstorableSagaData, match=r"data\['more'\]\['notes'\]\[0\]")
    with Session(engine) as session, session.begin(), refused:
        runtime.handle(session, NoteAdded(key="k2", note=note))
    with Session(engine) as session:
        saga = runtime.load(session, NoteTaker, "k2")
        assert saga is not None
        assert {} == saga.data.more  # the refused step changed nothing


@pytest.mark.parametrize("key", ["a\x00b", "a\ud800b", "k" * 300], ids=["NUL", "surrogate", "long"])
def test_reading_by_an_id_no_saga_can_have_finds_none(engine: Engine, key: str) -> None:
    with Session(engine) as session:
        assert runtime.load(session, NoteTaker, key) is None


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 10])
def test_the_worker_dead_letters_a_message_whose_data_cannot_be_stored_at_once(
    database_url: str, broker_url: str, batch_size: int
) -> None:
    app = App("notes", sagas=[NoteTaker], database=database_url, broker=broker_url)
    [letter], stats = through_one_worker(
        app, batch_size, NoteOpened(key="bad", note="x\x00y"), NoteOpened(key="ok", note="fine")
    )
    assert 1 == letter.attempts
    assert "unrecoverable" in letter.reason
    assert "holds a NUL character" in letter.reason
    with Session(app.engine) as session:
        assert runtime.load(session, NoteTaker, "ok") is not None
        assert runtime.load(session, NoteTaker, "bad") is None
    assert 0 == stats.retried
    app.engine.dispose()
