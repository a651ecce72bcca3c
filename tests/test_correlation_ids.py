"""Correlation ids no saga can be stored under (a NUL, too long, a lone surrogate) are refused
with a named error where a message maps to them, and a worker dead-letters such a message at
once instead of retrying a database error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox.tables import outbox_messages
from sagabox import App
from sagas import InvalidCorrelationId, MissingCorrelation, Saga, SagaRuntime, on
from sagas.tables import saga_instances, saga_journal
from tests.relay_helpers import through_one_worker
from tests.saga_fixtures import DocReview, DocSubmitted

runtime = SagaRuntime([DocReview], endpoint="docs")

UNSTORABLE = {
    "a NUL character": "D-1\x00",
    "too long": "D" * 256,
    "a lone surrogate": "D-\ud800",
}
# What a sender can put in an outbox (a lone surrogate cannot even be encoded as JSON).
SENDABLE = {name: doc for name, doc in UNSTORABLE.items() if name != "a lone surrogate"}


def _rows(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.scalar(select(func.count()).select_from(table))
            for table in (saga_instances, saga_journal, outbox_messages)
        )


@pytest.mark.parametrize("doc", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_starting_a_saga_with_an_unstorable_correlation_id_is_refused_by_name(
    engine: Engine, doc: str
) -> None:
    """`start` and `handle` raise InvalidCorrelationId naming the saga and the message, and
    nothing is written; the same session goes on working."""
    message = DocSubmitted(doc=doc)
    with Session(engine) as session, session.begin():
        with pytest.raises(
            InvalidCorrelationId, match=r"sagatest\.DocReview: sagatest\.DocSubmitted"
        ):
            runtime.start(session, DocReview, message)
        with pytest.raises(InvalidCorrelationId, match="at most 255 characters"):
            runtime.handle(session, message)
        runtime.start(session, DocReview, DocSubmitted(doc="D-2"))
    assert (1, 1, 0) == _rows(engine)


def test_a_correlation_id_of_255_characters_fits(engine: Engine) -> None:
    """The longest id the column holds is accepted, on every database."""
    with Session(engine) as session, session.begin():
        saga = runtime.start(session, DocReview, DocSubmitted(doc="D" * 255))
    with Session(engine) as session:
        assert saga.id == runtime.load(session, DocReview, "D" * 255).id  # type: ignore[union-attr]


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 10])
@pytest.mark.parametrize("doc", SENDABLE.values(), ids=SENDABLE.keys())
def test_the_worker_dead_letters_a_message_with_an_unstorable_correlation_id_at_once(
    database_url: str, broker_url: str, batch_size: int, doc: str
) -> None:
    """One attempt, not a retry per delay: the reason names the problem; the good message
    beside it is handled."""
    app = App("docs", sagas=[DocReview], database=database_url, broker=broker_url)
    [letter], stats = through_one_worker(
        app, batch_size, DocSubmitted(doc=doc), DocSubmitted(doc="D-ok")
    )
    assert 1 == letter.attempts
    assert "unrecoverable" in letter.reason
    assert "correlation id that" in letter.reason
    with Session(app.engine) as session:
        assert runtime.load(session, DocReview, "D-ok") is not None
    assert 0 == stats.retried
    app.engine.dispose()


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 10])
def test_an_empty_correlation_field_is_dead_lettered_at_once(
    database_url: str, broker_url: str, batch_size: int
) -> None:
    """An empty field stays empty on every try: it was retried 4 times, as a finder's "not
    found yet" is."""
    app = App("docs", sagas=[DocReview], database=database_url, broker=broker_url)
    refused = pytest.raises(InvalidCorrelationId, match="maps to an empty correlation id")
    with Session(app.engine) as session, session.begin(), refused:
        runtime.start(session, DocReview, DocSubmitted(doc=""))
    [letter], stats = through_one_worker(
        app, batch_size, DocSubmitted(doc=""), DocSubmitted(doc="D-ok")
    )
    assert 1 == letter.attempts
    assert "empty correlation id" in letter.reason
    assert 0 == stats.retried
    app.engine.dispose()


def test_a_finder_that_finds_nothing_yet_is_still_retried() -> None:
    """A (session, message) finder reads rows a later try may see: its empty answer stays
    `MissingCorrelation`, which a worker retries, not bad input."""

    class Nothing(BaseModel):
        pass

    class Found(Saga[Nothing], name="sagatest.Found"):
        states = ["new", "done"]
        transitions = [on(DocSubmitted, "new", "done")]
        correlation = {DocSubmitted: lambda session, message: ""}

    with pytest.raises(MissingCorrelation) as raised:
        Found.correlate(DocSubmitted(doc="D-1"))
    assert not isinstance(raised.value, InvalidCorrelationId)
