"""`on_not_found` as a function `(session, message) -> None`: run in the message's transaction
(its writes commit with it), journaled `not_found`; a raising one fails like a handler (retried,
then dead-lettered, its writes rolled back). Checked when the class is defined."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from outbox import Event
from sagabox import App
from sagabox.testing import SagaHarness
from sagas import Saga, SagaDefinitionError, SagaRuntime, on
from tests.request_app import FAST_RETRIES

business = MetaData()
orphans = Table("nf_orphans", business, Column("parcel_id", String(50), primary_key=True))


class ParcelSent(Event, type="nf.ParcelSent"):
    parcel_id: str


class ParcelScanned(Event, type="nf.ParcelScanned"):
    parcel_id: str


def record_orphan(session: Any, message: Any) -> None:
    session.execute(insert(orphans).values(parcel_id=message.parcel_id))
    if message.parcel_id.startswith("bad"):
        raise RuntimeError(f"cannot file orphan scan {message.parcel_id}")


async def record_orphan_later(session: Any, message: Any) -> None:
    """Never awaited by the runtime: refused when a saga names it."""


class ParcelData(BaseModel):
    scans: int = 0


class ParcelSaga(Saga[ParcelData], name="nf.Parcel"):
    states = ["new", "underway"]
    transitions = [
        on(ParcelSent, "new", "underway"),
        on(ParcelScanned, "underway", "underway"),
    ]
    correlation = {ParcelSent: "parcel_id", ParcelScanned: "parcel_id"}
    on_not_found = record_orphan


@pytest.fixture
def tables(engine: Engine) -> Engine:
    business.create_all(engine)
    return engine


def _orphans(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(orphans.c.parcel_id)).scalars())


def test_the_function_runs_in_the_transaction_and_the_message_is_journaled(
    tables: Engine,
) -> None:
    runtime = SagaRuntime([ParcelSaga], endpoint="parcels")
    with Session(tables) as session, session.begin():
        [handled] = runtime.handle(session, ParcelScanned(parcel_id="P-1"))
    assert "not_found" == handled.outcome
    assert ["P-1"] == _orphans(tables)
    with Session(tables) as session, session.begin():
        runtime.handle(session, ParcelScanned(parcel_id="P-2"))
        session.rollback()  # the caller owns the transaction: the function's row goes with it
    assert ["P-1"] == _orphans(tables)


def test_a_raising_function_fails_like_a_handler(database_url: str) -> None:
    """Retried, then dead-lettered with its error; its row never commits."""
    app = App("parcels", sagas=[ParcelSaga], retry=FAST_RETRIES)
    with SagaHarness(app, database=database_url, business=[business]) as h:
        h.dispatch(ParcelScanned(parcel_id="bad-1"))
        h.advance(timedelta(seconds=2))
        [letter] = h.dead_letters()
        assert 2 == letter.attempts
        assert "RuntimeError: cannot file orphan scan bad-1" in letter.reason
        assert [] == _orphans(app.engine)


@pytest.mark.parametrize(
    ("policy", "complaint"),
    [
        ("drop", "use one of raise, dead_letter, ignore"),
        (lambda m: None, "takes (session, message)"),
        (staticmethod(record_orphan_later), "is `async def`"),
    ],
)
def test_a_wrong_policy_is_refused_when_the_class_is_defined(policy: Any, complaint: str) -> None:
    with pytest.raises(
        SagaDefinitionError, match=complaint.replace("(", r"\(").replace(")", r"\)")
    ):

        class Broken(Saga[ParcelData]):
            states = ["new", "underway"]
            transitions = [on(ParcelSent, "new", "underway")]
            on_not_found = policy


@pytest.mark.parametrize("kind", ["classmethod", "staticmethod"])
def test_a_classmethod_or_staticmethod_handler_is_accepted_and_runs(
    tables: Engine, kind: str
) -> None:
    """Written in the class body with @classmethod or @staticmethod, it is called with
    (session, message) in the message's transaction, as a plain function is."""
    seen: list[str] = []

    if kind == "classmethod":

        class Tracked(Saga[ParcelData], name=f"nf.Tracked.{kind}"):
            states = ["new", "underway"]
            transitions = [
                on(ParcelSent, "new", "underway"),
                on(ParcelScanned, "underway", "underway"),
            ]
            correlation = {ParcelSent: "parcel_id", ParcelScanned: "parcel_id"}

            # mypy reads the base's ClassVar as an attribute, not as a method to override.
            @classmethod
            def on_not_found(cls, session: Any, message: Any) -> None:  # type: ignore[override]
                seen.append(f"{cls.__name__}:{message.parcel_id}")
                record_orphan(session, message)

    else:

        class Tracked(Saga[ParcelData], name=f"nf.Tracked.{kind}"):  # type: ignore[no-redef]
            states = ["new", "underway"]
            transitions = [
                on(ParcelSent, "new", "underway"),
                on(ParcelScanned, "underway", "underway"),
            ]
            correlation = {ParcelSent: "parcel_id", ParcelScanned: "parcel_id"}

            @staticmethod
            def on_not_found(session: Any, message: Any) -> None:  # type: ignore[override]
                seen.append(f"static:{message.parcel_id}")
                record_orphan(session, message)

    runtime = SagaRuntime([Tracked], endpoint="parcels")
    with Session(tables) as session, session.begin():
        [handled] = runtime.handle(session, ParcelScanned(parcel_id="P-9"))
    assert "not_found" == handled.outcome
    assert ["P-9"] == _orphans(tables)
    expected = "Tracked:P-9" if kind == "classmethod" else "static:P-9"
    assert [expected] == seen


def test_a_classmethod_with_the_wrong_arguments_is_refused() -> None:
    """A classmethod taking only (message) says what it must take."""
    with pytest.raises(SagaDefinitionError, match=r"takes \(session, message\)"):

        class Broken(Saga[ParcelData]):
            states = ["new", "underway"]
            transitions = [on(ParcelSent, "new", "underway")]

            @classmethod
            def on_not_found(cls, message: Any) -> None:
                """One argument short."""
