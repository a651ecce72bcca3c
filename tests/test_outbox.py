"""The outbox writer: rows live and die with the caller's transaction and decode to the message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox import Envelope, Event, Outbox, decode
from outbox.envelope import H_VERSION, encode
from outbox.errors import MessageTooLarge, UnstorableText
from outbox.tables import outbox_messages
from outbox.writer import MAX_HEADERS_BYTES
from tests.messages_fixture import LoanRequested, RunCreditCheck


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(outbox_messages)) or 0)


def _loan() -> LoanRequested:
    return LoanRequested(
        loan_id="L-7", amount=Decimal("900.10"), applicant="Grace", correlation_id="L-7"
    )


def test_rolled_back_transaction_leaves_no_outbox_row(engine: Engine) -> None:
    """A message added in a transaction that rolls back is never stored, so never sent."""
    with Session(engine) as session:
        Outbox(session).add(_loan())
        session.rollback()
    assert 0 == _count(engine)


def test_committed_row_decodes_to_an_equal_message(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A committed message leaves one row; its payload and headers decode to an equal message."""
    message = _loan()
    with Session(engine) as session, session.begin():
        assert message.message_id == Outbox(session).add(message)

    with engine.connect() as connection:
        rows = connection.execute(select(outbox_messages)).mappings().all()
    assert 1 == len(rows)
    row = rows[0]
    envelope = Envelope(row["type"], int(row["headers"][H_VERSION]), row["payload"], row["headers"])
    assert message == decode(envelope)
    # Events go to their type name; the partition key defaults to the correlation id.
    assert ("tests.LoanRequested", "L-7") == (row["destination"], row["partition_key"])
    now = datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert (now, now, 0) == (row["available_at"], row["created_at"], row["attempts"])


def test_commands_need_a_destination(engine: Engine) -> None:
    """A command without a destination is refused with the fix in the message."""
    command = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    with Session(engine) as session, session.begin():
        with pytest.raises(ValueError, match="destination='<endpoint name>'"):
            Outbox(session).add(command)
        Outbox(session).add(command, destination="credit-bureau", partition_key="L-7")
    with engine.connect() as connection:
        row = connection.execute(select(outbox_messages)).mappings().one()
    assert ("credit-bureau", "L-7") == (row["destination"], row["partition_key"])


def test_deliver_at_round_trips_as_aware_utc_and_compares_in_sql(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A future delivery time in any zone is stored as the same instant, and a bound `now`
    finds it due only once that instant has come (on SQLite as on PostgreSQL)."""
    later = datetime(2026, 1, 7, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    with Session(engine) as session, session.begin():
        Outbox(session).add(_loan(), deliver_at=later)

    def due(now: datetime) -> int:
        query = select(func.count()).where(outbox_messages.c.available_at <= now)
        with engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    with engine.connect() as connection:
        stored = connection.scalar(select(outbox_messages.c.available_at))
    assert later == stored
    assert timedelta(0) == stored.utcoffset()
    assert 0 == due(datetime(2026, 1, 7, 9, 29, 59, tzinfo=UTC))
    assert 1 == due(datetime(2026, 1, 7, 9, 30, tzinfo=UTC))


def test_naive_deliver_at_is_refused(engine: Engine) -> None:
    """A naive delivery time would depend on the server's zone: it is refused."""
    with Session(engine) as session, pytest.raises(ValueError, match="timezone-aware"):
        Outbox(session).add(_loan(), deliver_at=datetime(2026, 1, 7))  # noqa: DTZ001


def test_outbox_works_on_a_plain_connection(engine: Engine) -> None:
    """The writer takes a Core connection as well as an ORM session."""
    with engine.begin() as connection:
        Outbox(connection).add(_loan())
    assert 1 == _count(engine)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition_key", "k" * 256),
        ("partition_key", "a\x00b"),
        ("destination", "d" * 256),
    ],
)
def test_a_key_or_destination_its_column_cannot_hold_is_refused_by_name(
    engine: Engine, field: str, value: str
) -> None:
    # On PostgreSQL the row failed the caller's commit with a database error, which a worker
    # takes for an outage; on SQLite it was stored. Both refuse it now, before any write.
    message = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    arguments = {"destination": "credit", "partition_key": None, field: value}
    with Session(engine) as session, session.begin():
        with pytest.raises(ValueError, match=f"{field} .* at most 255 characters without NUL"):
            Outbox(session).add(message, **arguments)  # type: ignore[arg-type]
        Outbox(session).add(message, destination="credit", partition_key="k" * 255)
    assert _count(engine) == 1


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"note": "a\x00b"}, "header 'note' holds a NUL character"),
        ({"a\x00b": "v"}, "holds a NUL character"),
        ({"é" * 128: "v"}, "header name 'ééé.* is 256 bytes long"),
    ],
)
def test_a_header_the_outbox_or_the_broker_cannot_carry_is_refused_by_name(
    engine: Engine, headers: dict[str, str], problem: str
) -> None:
    """A NUL failed the caller's commit on PostgreSQL (JSONB refuses it) where SQLite stored
    it; a name past 255 bytes (AMQP's limit for a header name) was stored on both, and no
    relay could publish it. Both are refused now, before any write; 255 bytes are taken."""
    message = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    with Session(engine) as session, session.begin():
        with pytest.raises(UnstorableText, match=problem):
            Outbox(session).add(message, destination="credit", headers=headers)
        Outbox(session).add(message, destination="credit", headers={"é" * 127 + "x": "v"})
    assert _count(engine) == 1


def test_headers_bigger_than_a_broker_frame_are_refused(engine: Engine) -> None:
    """AMQP sends a message's headers in one frame, and RabbitMQ closed the relay's whole
    connection over a bigger one, failing every batch the row was claimed in."""
    message = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    with Session(engine) as session, session.begin():
        with pytest.raises(MessageTooLarge, match=r"headers of a .* message take 2[0-9]{4} bytes"):
            Outbox(session).add(message, destination="credit", headers={"note": "é" * 10_000})
        Outbox(session).add(message, destination="credit", headers={"note": "x" * 10_000})
    assert _count(engine) == 1


def test_a_retry_of_a_message_at_the_header_limit_is_written(engine: Engine) -> None:
    """A retry adds its own headers (attempts, first failure) to an envelope written once; a
    message accepted at the limit was dead-lettered when its retry was refused for them."""
    message = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    sent = encode(message)
    room = MAX_HEADERS_BYTES - sum(len(n) + len(v) + 6 for n, v in sent.headers.items()) - 10
    with Session(engine) as session, session.begin():
        row = Outbox(session).row(message, destination="credit", headers={"note": "x" * room})
        headers = {**row["headers"], "sagabox-attempts": "1", "sagabox-first-failed-at": "x" * 40}
        again = Envelope(sent.type, sent.version, sent.payload, headers)
        Outbox(session).add_envelope(again, destination="credit", partition_key="k")
    assert _count(engine) == 1


def test_a_type_name_its_column_cannot_hold_is_refused_by_name(engine: Engine) -> None:
    """A message type is stored in a column of 255 characters too; a longer one (a message
    class's own, or a retried or replayed envelope's) failed the commit on PostgreSQL."""
    message = RunCreditCheck(loan_id="L-7", applicant="Grace", bureau="acme")
    sent = encode(message)
    long = Envelope("x" * 256, sent.version, sent.payload, sent.headers)
    with Session(engine) as session, session.begin():
        with pytest.raises(ValueError, match=r"type .* at most 255 characters without NUL"):
            Outbox(session).add_envelope(long, destination="credit", partition_key="k")
        Outbox(session).add_envelope(sent, destination="credit", partition_key="k")
    assert _count(engine) == 1


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


class Noted(Event, type="tests.Noted"):
    note: Any


@pytest.mark.parametrize(
    "note",
    [pytest.param("\udcff", id="lone surrogate"), pytest.param(_nested(5000), id="5000 deep")],
)
def test_fields_json_cannot_hold_are_refused_by_name(engine: Engine, note: object) -> None:
    """pydantic's serialization error reached the caller as it was, naming no message and no
    fix, and not an error a worker dead-letters at once."""
    with Session(engine) as session, session.begin():
        with pytest.raises(UnstorableText, match=r"tests\.Noted: its fields cannot be written"):
            Outbox(session).add(Noted(note=note))
        Outbox(session).add(_loan())
    assert _count(engine) == 1
