"""Rows the broker does not take (refused, nacked, unroutable): each is retried on its own and
dead-lettered after its attempts, while the rest of its batch ships once and every other
partition key keeps flowing; the rows behind it in its own key wait until it is settled."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun.api import FrozenDateTimeFactory
from kombu import Connection, Producer
from sqlalchemy import Engine, cast, literal, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from outbox import Outbox, clock
from outbox.claim import claim_due, postpone_rows
from outbox.database import make_engine
from outbox.dead_letters import list_dead_letters, replay_dead_letter
from outbox.tables import outbox_messages
from relay import Relay
from relay.broker import topic_exchange
from sagabox import migrate
from sagabox.cli import main
from tests.bank_app import Deposit, Deposited
from tests.poison_helpers import (
    Listener,
    bounded_queue,
    broker_message_limit,
    outbox_rows,
    write,
)

#: With the default policy (10 attempts, 5 s doubling up to 320 s), ten minutes between drains
#: makes every kept row due again.
_LATER = timedelta(minutes=10)


@pytest.fixture
def listener(broker_url: str) -> Iterator[Listener]:
    listener = Listener(broker_url, Deposited.type_name, "bank")
    yield listener
    listener.close()


def _drain_until_settled(relay: Relay, clock_: FrozenDateTimeFactory, times: int) -> None:
    for _ in range(times):
        clock_.tick(_LATER)
        relay.drain()


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_a_row_the_broker_refuses_is_dead_lettered_and_nothing_else_waits_for_it(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Over RabbitMQ's max_message_size the broker closes the channel (PRECONDITION_FAILED).
    The oldest row being that one, the five commands behind it in other keys still ship at
    once, each once; the row behind it in its own key waits until it is dead-lettered."""
    big = Deposited(account="x" * 100_000, amount=1, correlation_id="k-big")
    behind = Deposited(account="behind", amount=2, correlation_id="k-big")
    write(engine, big, behind)
    commands = [Deposit(account=f"a{n}", amount=n, correlation_id=f"k{n}") for n in range(5)]
    write(engine, *commands, destination="bank")
    with broker_message_limit(64 * 1024):
        relay = Relay(engine, broker_url, exchange=listener.exchange)
        try:
            relay.drain()
            copies = listener.copies()
            assert {str(c.message_id): 1 for c in commands} == dict(copies)
            [kept_big, kept_behind] = outbox_rows(engine)
            assert (big.message_id, 1) == (kept_big.message_id, kept_big.attempts)
            assert (behind.message_id, 0) == (kept_behind.message_id, kept_behind.attempts)
            assert kept_big.available_at > clock.now()

            _drain_until_settled(relay, frozen_clock, 9)
        finally:
            relay.close()
    assert [] == outbox_rows(engine)
    assert 1 == listener.copies()[str(behind.message_id)]
    assert 0 == listener.copies()[str(big.message_id)]
    with engine.connect() as connection:
        [letter] = list_dead_letters(connection)
    assert (Deposited.type_name, big.message_id, 10) == (
        letter.endpoint,
        letter.message_id,
        letter.attempts,
    )
    assert "larger than configured max size" in letter.reason
    assert 10 == relay.stats.dead_lettered + relay.stats.retried


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_a_nack_does_not_send_the_healthy_rows_of_its_batch_again(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A queue with x-overflow=reject-publish that is full nacks the command to it; the events
    published in the same batches arrive exactly once however often that command is retried."""
    with bounded_queue(broker_url, listener.exchange, "full", length=0):
        healthy = [Deposited(account=f"h{n}", amount=n, correlation_id=f"h{n}") for n in range(3)]
        refused = Deposit(account="f", amount=1, correlation_id="f")
        write(engine, healthy[0], healthy[1])
        write(engine, refused, destination="full")
        write(engine, healthy[2])
        relay = Relay(engine, broker_url, exchange=listener.exchange)
        try:
            relay.drain()
            _drain_until_settled(relay, frozen_clock, 5)
        finally:
            relay.close()
    assert {str(m.message_id): 1 for m in healthy} == dict(listener.copies())
    [kept] = outbox_rows(engine)
    assert (refused.message_id, 6) == (kept.message_id, kept.attempts)
    assert 3 == relay.stats.published


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_after_a_nack_the_same_relay_ships_once_the_queue_has_room(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """The publisher forgets a nack once its batch is settled: when the full queue has room
    again, the next drain of the same relay delivers the command."""
    with bounded_queue(broker_url, listener.exchange, "full", length=1) as queue:
        with Connection(broker_url) as connection:
            Producer(connection.channel(), exchange=topic_exchange(listener.exchange)).publish(
                b"{}", routing_key="full", content_type="application/json"
            )
        command = Deposit(account="f", amount=1)
        write(engine, command, destination="full")
        relay = Relay(engine, broker_url, exchange=listener.exchange)
        try:
            relay.drain()
            [kept] = outbox_rows(engine)
            assert 1 == kept.attempts
            queue.purge()
            frozen_clock.tick(_LATER)
            relay.drain()
        finally:
            relay.close()
        assert [] == outbox_rows(engine)
        message = queue.get(no_ack=True)
        assert message is not None
        assert str(command.message_id) == message.properties["message_id"]


@pytest.mark.usefixtures("listener")
def test_an_unroutable_command_holds_its_key_then_is_dead_lettered_and_replays(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A command to an endpoint with no queue is kept and retried (attempts counted) while the
    next row of its key waits and other keys ship; after its last attempt it is a dead letter
    of that endpoint, the key moves on, and `replay` sends it to the same endpoint."""
    lost = Deposit(account="lost", amount=1, correlation_id="k")
    write(engine, lost, destination="nobody-home")
    behind = Deposited(account="behind", amount=2, correlation_id="k")
    other = Deposited(account="other", amount=3, correlation_id="other")
    write(engine, behind, other)
    relay = Relay(engine, broker_url, exchange=listener.exchange, max_attempts=3)
    try:
        relay.drain()
        assert {str(other.message_id): 1} == dict(listener.copies())
        assert [(lost.message_id, 1), (behind.message_id, 0)] == [
            (row.message_id, row.attempts) for row in outbox_rows(engine)
        ]
        _drain_until_settled(relay, frozen_clock, 2)
        assert 1 == listener.copies()[str(behind.message_id)]
        assert [] == outbox_rows(engine)
        with engine.connect() as connection:
            [letter] = list_dead_letters(connection)
        assert ("nobody-home", lost.message_id, 3) == (
            letter.endpoint,
            letter.message_id,
            letter.attempts,
        )
        assert letter.reason.startswith("relay: unroutable")

        with engine.begin() as connection:
            assert lost.message_id == replay_dead_letter(connection, letter.id)
        [again] = outbox_rows(engine)
        assert ("nobody-home", 0) == (again.destination, again.attempts)
    finally:
        relay.close()


def test_the_claim_skips_rows_behind_a_retry_but_not_behind_a_scheduled_row(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Only a row that failed and waits for its retry holds up its key; a row scheduled for
    later (a timeout, say) does not, and neither does a retry that is due again."""
    write(engine, Deposited(account="p1", amount=1, correlation_id="p"))
    with engine.begin() as connection:
        [p1] = claim_due(connection, now=clock.now(), limit=1)
        postpone_rows(connection, [p1.id], until=clock.now() + timedelta(seconds=5))
    write(engine, Deposited(account="p2", amount=2, correlation_id="p"))
    with Session(engine) as session, session.begin():
        Outbox(session).add(
            Deposited(account="q1", amount=1, correlation_id="q"),
            deliver_at=clock.now() + timedelta(hours=1),
        )
        Outbox(session).add(Deposited(account="q2", amount=2, correlation_id="q"))
    with engine.connect() as connection:
        claimed = claim_due(connection, now=clock.now(), limit=10)
    assert ["q2"] == [Deposited.model_validate_json(row.payload).account for row in claimed]
    frozen_clock.tick(timedelta(seconds=5))
    with engine.connect() as connection:
        claimed = claim_due(connection, now=clock.now(), limit=10)
    assert ["p1", "p2", "q2"] == [
        Deposited.model_validate_json(row.payload).account for row in claimed
    ]


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_the_row_behind_a_nacked_row_of_its_key_waits_even_in_the_same_batch(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Written in one transaction and claimed in one batch, the second row of a key is not
    published until the first is settled: it goes out after the first is dead-lettered."""
    with bounded_queue(broker_url, listener.exchange, "full", length=0):
        refused = Deposit(account="k", amount=1, correlation_id="k")
        behind = Deposited(account="k", amount=2, correlation_id="k")
        other = Deposited(account="o", amount=3, correlation_id="o")
        with Session(engine) as session, session.begin():
            Outbox(session).add(refused, destination="full")
            Outbox(session).add(behind)
            Outbox(session).add(other)
        relay = Relay(engine, broker_url, exchange=listener.exchange, max_attempts=2)
        try:
            relay.drain()
            assert {str(other.message_id): 1} == dict(listener.copies())
            frozen_clock.tick(_LATER)
            relay.drain()
        finally:
            relay.close()
    assert {str(other.message_id): 1, str(behind.message_id): 1} == dict(listener.copies())
    with engine.connect() as connection:
        [letter] = list_dead_letters(connection)
    assert ("full", refused.message_id) == (letter.endpoint, letter.message_id)
    assert "nacked" in letter.reason


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_command_line_dead_letters_a_row_after_max_attempts_and_replays_it(
    engine: Engine, database_url: str, memory_broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagabox relay --once --max-attempts 1`: the command nobody receives becomes a dead
    letter at its first failure, `dlq list` shows the relay's reason, `dlq replay` puts it back
    in the outbox for the same endpoint."""
    command = Deposit(account="a", amount=1)
    write(engine, command, destination="nobody-home")
    args = ["--db", database_url]
    assert 0 == main(["relay", *args, "--broker", memory_broker, "--once", "--max-attempts", "1"])
    assert "shipped 0 messages to memory://, dead-lettered 1" in capsys.readouterr().out
    assert [] == outbox_rows(engine)
    assert 0 == main(["dlq", "list", *args, "--json"])
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert ("nobody-home", str(command.message_id), 1) == (
        listed["endpoint"],
        listed["message_id"],
        listed["attempts"],
    )
    assert listed["reason"].startswith("relay: unroutable")
    assert 0 == main(["dlq", "replay", *args, str(listed["id"])])
    [again] = outbox_rows(engine)
    assert (command.message_id, "nobody-home") == (again.message_id, again.destination)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_a_refused_row_sent_with_others_is_found_one_at_a_time(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A refused row small enough to go out with others (the broker's limit below 64 KiB)
    closes the channel with their confirms in flight: those rows are sent again one at a time
    until the culprit is found, so every good row arrives (a copy is possible, for the inbox to
    drop), the culprit is kept for its retry, and the row behind it in its key waits."""
    before = [Deposited(account=f"b{n}", amount=n, correlation_id=f"b{n}") for n in range(3)]
    culprit = Deposited(account="x" * 40_000, amount=0, correlation_id="k")
    behind = Deposited(account="behind", amount=1, correlation_id="k")
    after = [Deposited(account=f"a{n}", amount=n, correlation_id=f"a{n}") for n in range(3)]
    write(engine, *before, culprit, behind, *after)
    with broker_message_limit(16 * 1024):
        relay = Relay(engine, broker_url, exchange=listener.exchange, max_attempts=2)
        try:
            relay.drain()
            copies = listener.copies()
            assert {str(m.message_id) for m in [*before, *after]} == set(copies)
            assert [(culprit.message_id, 1), (behind.message_id, 0)] == [
                (row.message_id, row.attempts) for row in outbox_rows(engine)
            ]
            frozen_clock.tick(_LATER)
            relay.drain()
        finally:
            relay.close()
    assert 1 == listener.copies()[str(behind.message_id)]
    with engine.connect() as connection:
        [letter] = list_dead_letters(connection)
    assert culprit.message_id == letter.message_id
    assert "larger than configured max size" in letter.reason


def test_a_sqlite_row_whose_headers_are_not_json_does_not_stop_the_relay(
    tmp_path: Path, memory_broker: str, frozen_clock: FrozenDateTimeFactory
) -> None:
    """SQLite keeps any text in a JSON column: a row whose headers are not JSON at all ships
    without them instead of failing the claim, and so every batch, forever."""
    url = f"sqlite:///{tmp_path / 'garbage.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        now = clock.now()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO sagabox_outbox_messages (message_id, type, destination, "
                    "partition_key, payload, headers, available_at, attempts, created_at) "
                    "VALUES (:id, 'bank.Deposited', 'bank.Deposited', 'k-garbage', '{}', "
                    "'not json headers', :now, 0, :now)"
                ),
                {"id": uuid.uuid4().hex, "now": now.replace(tzinfo=None).isoformat(sep=" ")},
            )
        behind = Deposited(account="behind", amount=2, correlation_id="k-behind")
        write(engine, behind)
        relay = Relay(engine, memory_broker)
        try:
            relay.drain()
        finally:
            relay.close()
        assert [] == outbox_rows(engine)
        assert 2 == relay.stats.published
    finally:
        engine.dispose()


@pytest.mark.parametrize("headers", [[1, 2, 3], None, "text"])
def test_a_row_whose_headers_are_not_an_object_does_not_stop_the_relay(
    engine: Engine, broker_url: str, listener: Listener, headers: object
) -> None:
    """A row written by hand (or by a buggy migration) with headers that are JSON but not an
    object: the relay ships it without them (a worker dead-letters it as having no sagabox
    headers, keeping its body) instead of failing every batch, and the rows behind it ship."""
    behind = Deposited(account="behind", amount=2, correlation_id="k-behind")
    _write_by_hand(engine, "k-garbage", headers)
    write(engine, behind)
    _drain(engine, broker_url, listener)
    assert [] == outbox_rows(engine)
    assert 1 == listener.copies()[str(behind.message_id)]


def test_a_row_whose_headers_nest_deeper_than_python_parses_does_not_stop_the_relay(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    """Headers written by hand as JSON nested 3,000 deep, which the database stores but
    Python's parser refuses (RecursionError): the row ships without them, as for headers that
    are not an object, and the rows behind it ship; it failed the claim, and so every batch."""
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    behind = Deposited(account="behind", amount=2, correlation_id="k-behind")
    headers = cast(literal(deep), JSONB) if engine.dialect.name == "postgresql" else literal(deep)
    _write_by_hand(engine, "k-deep", headers)
    write(engine, behind)
    _drain(engine, broker_url, listener)
    assert [] == outbox_rows(engine)
    assert 1 == listener.copies()[str(behind.message_id)]


@pytest.mark.parametrize(
    "headers",
    [{"n": 2**70}, {"n": 2**63}, {"k" * 300: "v"}],
    ids=["int-past-64-bits", "int-past-signed-64-bits", "name-past-255"],
)
@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_a_row_whose_headers_amqp_cannot_encode_is_dead_lettered_at_once(
    engine: Engine, broker_url: str, listener: Listener, headers: dict[str, object]
) -> None:
    """Headers written by hand that are JSON objects AMQP's field table cannot hold (an integer
    past 64 bits, a name past 255 bytes): py-amqp raises struct.error while encoding, before a
    byte goes out. The row is dead-lettered as unencodable and the rest ships; the error failed
    every batch the row was claimed in, so the relay shipped nothing more."""
    other = Deposited(account="other", amount=2, correlation_id="k-other")
    _write_by_hand(engine, "k-odd", headers)
    write(engine, other)
    _drain(engine, broker_url, listener)
    assert [] == outbox_rows(engine)
    assert 1 == listener.copies()[str(other.message_id)]
    with engine.connect() as connection:
        [letter] = list_dead_letters(connection)
    assert "cannot be encoded as an AMQP message (error:" in letter.reason


def _write_by_hand(engine: Engine, partition_key: str, headers: object) -> None:
    """A due Deposited row written past the writer's checks, with `headers` as given."""
    now = clock.now()
    with engine.begin() as connection:
        connection.execute(
            outbox_messages.insert().values(
                message_id=uuid.uuid4(),
                type=Deposited.type_name,
                destination=Deposited.type_name,
                partition_key=partition_key,
                payload='{"account": "g", "amount": 1}',
                headers=headers,
                available_at=now,
                created_at=now,
            )
        )


def _drain(engine: Engine, broker_url: str, listener: Listener) -> None:
    relay = Relay(engine, broker_url, exchange=listener.exchange)
    try:
        relay.drain()
    finally:
        relay.close()
