"""The relay: what it publishes and how, what it keeps, partition order with several relays,
and what wakes it. Runs on both databases and both brokers where the property is general."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import kombu.exceptions
import pytest
from freezegun.api import FrozenDateTimeFactory
from kombu import Connection, Queue, binding
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from outbox import Outbox, clock
from outbox.claim import OutboxRow, claim_due
from outbox.database import make_engine
from outbox.tables import outbox_messages
from relay import Relay
from relay.broker import topic_exchange
from tests.bank_app import AccountOpened, Deposit, Deposited
from tests.relay_helpers import outbox_count, wait_for


class Listener:
    """A queue bound to some routing keys on a private exchange, read with basic.get."""

    def __init__(self, broker_url: str, *keys: str) -> None:
        self.exchange = f"test-{uuid.uuid4().hex[:8]}"
        self._connection = Connection(broker_url)
        exchange = topic_exchange(self.exchange)
        self.queue = Queue(
            f"{self.exchange}-listener",
            [binding(exchange, routing_key=key) for key in keys],
            durable=False,
            auto_delete=False,
        )(self._connection.channel())
        self.queue.declare()
        self.received: list[object] = []

    def fetch(self) -> list[object]:
        """Everything waiting now, acknowledged."""
        got = []
        while (message := self.queue.get(no_ack=True)) is not None:
            got.append(message)
        self.received.extend(got)
        return got

    def close(self) -> None:
        self.queue.delete()
        self._connection.release()


@pytest.fixture
def listener(broker_url: str) -> Iterator[Listener]:
    listener = Listener(broker_url, Deposited.type_name, "bank")
    yield listener
    listener.close()


def _write(engine: Engine, *messages: object, destination: str | None = None) -> None:
    with Session(engine) as session, session.begin():
        for message in messages:
            Outbox(session).add(message, destination=destination)  # type: ignore[arg-type]


@pytest.mark.usefixtures("frozen_clock")
def test_rows_are_published_as_persistent_json_with_their_headers_then_deleted(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    event = Deposited(account="a", amount=5, correlation_id="acct-a")
    _write(engine, event)
    relay = Relay(engine, broker_url, exchange=listener.exchange)
    assert 1 == relay.drain()
    relay.close()
    [message] = listener.fetch()
    assert "application/json" == message.content_type  # type: ignore[attr-defined]
    assert 2 == message.properties["delivery_mode"]  # type: ignore[attr-defined]
    assert str(event.message_id) == message.properties["message_id"]  # type: ignore[attr-defined]
    headers = message.headers  # type: ignore[attr-defined]
    assert Deposited.type_name == headers["sagabox-type"]
    assert "acct-a" == headers["sagabox-correlation-id"]
    assert 0 == outbox_count(engine)


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_scheduled_rows_wait_for_their_time(
    engine: Engine, broker_url: str, listener: Listener, frozen_clock: FrozenDateTimeFactory
) -> None:
    with Session(engine) as session, session.begin():
        Outbox(session).add(
            Deposited(account="a", amount=1), deliver_at=clock.now() + timedelta(hours=2)
        )
    relay = Relay(engine, broker_url, exchange=listener.exchange)
    assert 0 == relay.drain()
    frozen_clock.tick(timedelta(hours=2))
    assert 1 == relay.drain()
    assert 1 == len(listener.fetch())


@pytest.mark.usefixtures("frozen_clock")
def test_an_unreachable_broker_leaves_every_row_in_place(engine: Engine) -> None:
    _write(engine, Deposited(account="a", amount=1), Deposited(account="b", amount=2))
    relay = Relay(engine, "amqp://guest:guest@127.0.0.1:1//")
    with pytest.raises(kombu.exceptions.OperationalError, match="Connection refused"):
        relay.publish_batch()
    assert 2 == outbox_count(engine)


@pytest.mark.usefixtures("frozen_clock")
def test_commands_nobody_receives_are_kept_and_events_nobody_wants_are_dropped(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    """A command to an endpoint with no queue comes back from the broker: the row stays, with
    an attempt counted and a later due time. An event without subscribers is simply done."""
    _write(engine, Deposit(account="a", amount=1), destination="nobody-home")
    _write(engine, Deposited(account="a", amount=1), AccountOpened(account="b"))
    relay = Relay(engine, broker_url, exchange=listener.exchange)
    relay.drain()
    relay.close()
    with engine.connect() as connection:
        [kept] = connection.execute(select(outbox_messages)).all()
    assert ("nobody-home", 1) == (kept.destination, kept.attempts)
    assert kept.available_at > clock.now()
    assert 1 == relay.stats.unroutable
    assert 1 == len(listener.fetch())


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("frozen_clock")
def test_a_relay_never_publishes_past_a_partition_row_another_relay_holds(
    engine: Engine,
) -> None:
    """Deterministic interleavings of three claims on PostgreSQL (rows 1-3 and 6 in partition
    p, 4 in q, 5 in none): a claim only returns a partition's rows when every older due row is
    its own or already shipped."""
    for key, n in [("p", 1), ("p", 2), ("p", 3), ("q", 4), (None, 5)]:
        _write(engine, Deposited(account=f"r{n}", amount=n, correlation_id=key))

    def ids(rows: list[OutboxRow]) -> list[int]:
        return [row.id for row in rows]

    first, second, third = (engine.connect() for _ in range(3))
    try:
        with first.begin():
            # `first` holds row 1 (partition p).
            assert [1] == ids(claim_due(first, now=clock.now(), limit=1))
            with second.begin():
                # Rows 2 and 3 are locked by `second` but not publishable behind row 1.
                assert [4, 5] == ids(claim_due(second, now=clock.now(), limit=10))
                # `first` ships row 1 and commits: row 1 is gone.
                first.execute(text("DELETE FROM sagabox_outbox_messages WHERE id = 1"))
                first.commit()
                _write(engine, Deposited(account="r6", amount=6, correlation_id="p"))
                with third.begin():
                    # Row 6 of p is free, but rows 2 and 3 (held by `second`) come first.
                    assert [] == ids(claim_due(third, now=clock.now(), limit=10))
            # `second` rolled back without shipping: rows 2, 3 and 6 go out in order.
            with third.begin():
                assert [2, 3, 4, 5, 6] == ids(claim_due(third, now=clock.now(), limit=10))
    finally:
        for connection in (first, second, third):
            connection.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("frozen_clock")
@pytest.mark.parametrize("limit", [1, 3])
def test_a_claim_passes_the_keys_another_relay_holds_to_a_due_row_of_another(
    engine: Engine, limit: int
) -> None:
    """Another relay holds the oldest row of `limit` keys; their second rows are the soonest
    due, and wait behind them. A row of another key is due too: the claim returns it. It
    returned nothing (every row it locked was held), so `drain` stopped there and `run` slept a
    poll interval with a row it could ship."""
    keys = [f"k{n}" for n in range(limit)]
    for n, key in enumerate([*keys, *keys, "free"], start=1):
        _write(engine, Deposited(account=f"r{n}", amount=n, correlation_id=key))
    holder, claiming = engine.connect(), engine.connect()
    try:
        with holder.begin():
            held = claim_due(holder, now=clock.now(), limit=limit)
            assert list(range(1, limit + 1)) == [row.id for row in held]
            with claiming.begin():
                rows = claim_due(claiming, now=clock.now(), limit=limit)
                assert [2 * limit + 1] == [row.id for row in rows]
    finally:
        holder.close()
        claiming.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("frozen_clock")
def test_a_claim_stops_a_partition_at_a_row_another_relay_holds_between_its_own(
    engine: Engine,
) -> None:
    """Another relay holds row 2 of partition p; a claim that locks rows 1, 3 and 4 of p
    (and row 5 of q) publishes 1 and 5: 3 and 4 would overtake row 2."""
    for key, n in [("p", 1), ("p", 2), ("p", 3), ("p", 4), ("q", 5)]:
        _write(engine, Deposited(account=f"r{n}", amount=n, correlation_id=key))
    other, claiming = engine.connect(), engine.connect()
    try:
        with other.begin():
            other.execute(text("SELECT id FROM sagabox_outbox_messages WHERE id = 2 FOR UPDATE"))
            with claiming.begin():
                rows = claim_due(claiming, now=clock.now(), limit=10)
                assert [1, 5] == [row.id for row in rows]
                # Rows 3 and 4 stay locked by this claim until it ends, as before.
                locked = other.execute(
                    text(
                        "SELECT id FROM sagabox_outbox_messages WHERE id IN (3, 4) "
                        "FOR UPDATE SKIP LOCKED"
                    )
                ).all()
                assert [] == locked
    finally:
        other.close()
        claiming.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_batch_of_rows_due_before_older_ones_of_their_key_never_stalls_the_claim(
    engine: Engine,
) -> None:
    """The claim takes the soonest due rows first; when every one of them waits for an older
    row of its key outside the batch (due later, both due now), it claims in id order instead,
    so the key still goes out in order and the relay moves on."""
    now = clock.now()
    with Session(engine) as session, session.begin():
        outbox = Outbox(session)
        outbox.add(Deposited(account="a", amount=1, correlation_id="p"), deliver_at=now)
        older_due_later = now - timedelta(minutes=1)
        outbox.add(Deposited(account="b", amount=2, correlation_id="p"), deliver_at=now)
        session.execute(
            outbox_messages.update()
            .where(outbox_messages.c.id == 1)
            .values(available_at=older_due_later)
        )
        session.execute(
            outbox_messages.update()
            .where(outbox_messages.c.id == 2)
            .values(available_at=older_due_later - timedelta(minutes=1))
        )
    with engine.begin() as connection:
        assert [1] == [row.id for row in claim_due(connection, now=now, limit=1)]
    with engine.begin() as connection:
        assert [1, 2] == [row.id for row in claim_due(connection, now=now, limit=10)]


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_two_relays_with_interleaved_writers_deliver_everything_in_partition_order(
    database_url: str, broker_url: str, listener: Listener
) -> None:
    """Four writer threads commit 1-3 events at a time to 20 partitions while two relays ship
    in small batches: every event arrives once, and each partition's in the order written.
    On PostgreSQL the relays work side by side; on SQLite they queue for the write lock."""
    engine = make_engine(database_url)
    relays = [
        Relay(engine, broker_url, exchange=listener.exchange, batch_size=7, poll_interval=0.05)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=relay.run) for relay in relays]
    for thread in threads:
        thread.start()
    written: dict[str, list[int]] = defaultdict(list)

    def writer(number: int) -> None:
        rng = random.Random(number)  # noqa: S311 - a reproducible test mix
        partitions = [f"w{number}-p{i}" for i in range(5)]
        for _ in range(50):
            batch = []
            for key in rng.sample(partitions, rng.randint(1, 3)):
                seq = len(written[key])
                written[key].append(seq)
                batch.append(Deposited(account=key, amount=1, seq=seq, correlation_id=key))
            _write(engine, *batch)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    total = sum(len(seqs) for seqs in written.values())
    wait_for(lambda: outbox_count(engine) == 0, what="the outbox to empty")
    for relay in relays:
        relay.stop()
    for thread in threads:
        thread.join(timeout=10)
    wait_for(lambda: len(listener.fetch()) == 0 and len(listener.received) >= total, what="all")

    arrived: dict[str, list[int]] = defaultdict(list)
    for message in listener.received:
        payload = message.body  # type: ignore[attr-defined]
        event = Deposited.model_validate_json(payload)
        arrived[event.account].append(event.seq)
    assert written == arrived
    assert total == sum(relay.stats.published for relay in relays)
    if engine.dialect.name == "postgresql":
        # Side by side on PostgreSQL. SQLite's write lock is not fair: one relay may win
        # every turn, which is correct, if idle for the other.
        assert all(relay.stats.published > 0 for relay in relays), [r.stats for r in relays]
    engine.dispose()


def _listening_backends(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query = 'LISTEN sagabox_outbox'"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_commit_wakes_an_idle_relay_long_before_its_poll(
    engine: Engine, broker_url: str, listener: Listener, backend: str
) -> None:
    """With a 60 s poll interval, a commit reaches the broker within seconds: through
    LISTEN/NOTIFY on PostgreSQL (written over a bare connection, which no in-process hook
    sees), through the in-process commit hook on SQLite."""
    relay = Relay(engine, broker_url, exchange=listener.exchange, poll_interval=60)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        if backend == "postgresql":
            wait_for(lambda: _listening_backends(engine) == 1, what="LISTEN")
        for number in range(2):
            wait_for(relay.idle.is_set, what="the relay to idle")
            event = Deposited(account="a", amount=number)
            if backend == "postgresql":
                with engine.begin() as connection:
                    Outbox(connection).add(event)
            else:
                _write(engine, event)
            wait_for(lambda: len(listener.fetch()) == 1, timeout=10, what="the event")
    finally:
        relay.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


class _CommitBeforeSleeping(Relay):
    """A relay that, the first time it is about to sleep, sees a commit land just after its last
    (empty) claim: the race a relay that listens only while asleep must not lose."""

    def __init__(self, *args: object, commit: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._commit = commit

    def _idle_timeout(self) -> float:
        if self._commit is not None:
            commit, self._commit = self._commit, None
            commit()  # type: ignore[operator]
        return super()._idle_timeout()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_commit_between_the_last_claim_and_sleep_still_wakes_the_relay(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    """The notification arrives while the relay is awake, so the LISTEN thread leaves it in the
    socket; it must still wake the relay as soon as it sleeps, not after the 60 s poll."""

    def commit() -> None:
        # Once LISTENing: its wake-up on connecting must not be what saves the day.
        wait_for(lambda: _listening_backends(engine) == 1, what="LISTEN")
        with engine.begin() as connection:  # a bare connection: only NOTIFY can tell the relay
            Outbox(connection).add(Deposited(account="a", amount=1))

    relay = _CommitBeforeSleeping(
        engine, broker_url, exchange=listener.exchange, poll_interval=60, commit=commit
    )
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        wait_for(lambda: len(listener.fetch()) == 1, timeout=10, what="the event")
    finally:
        relay.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_broker_failures_back_off_and_never_log_the_password(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    _write(engine, Deposited(account="a", amount=1))
    relay = Relay(engine, "amqp://guest:topsecret-pw@127.0.0.1:1//", poll_interval=0.05)
    thread = threading.Thread(target=relay.run)
    with caplog.at_level(logging.INFO, logger="sagabox"):
        thread.start()
        wait_for(lambda: relay.stats.failures >= 2, what="two failed batches")
        relay.stop()
        thread.join(timeout=10)
    assert "batch rolled back" in caplog.text
    assert "guest:***@127.0.0.1" in caplog.text
    assert "topsecret-pw" not in caplog.text
    assert 1 == outbox_count(engine)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_rows_due_before_older_ones_of_their_key_do_not_shrink_every_batch(
    engine: Engine,
) -> None:
    """Three keys each have a newer row due before its older one (after an outage); other
    keys' rows fall due in between. The soonest-first claim locks the three held rows in every
    batch and shipped one row a batch; the claim now adds the id-ordered rows, whose oldest
    are the three rows holding the keys up, and ships a full batch in each key's order."""
    now = clock.now()
    with Session(engine) as session, session.begin():
        outbox = Outbox(session)
        for key in ("a", "b", "c"):  # ids 1-3: the older rows, due last
            outbox.add(Deposited(account=key, amount=1), partition_key=key, deliver_at=now)
        for key in ("a", "b", "c"):  # ids 4-6: the newer rows, due first
            outbox.add(Deposited(account=key, amount=2), partition_key=key, deliver_at=now)
        for n in range(10):  # ids 7-16: other keys, due in between
            outbox.add(Deposited(account=f"o{n}", amount=3), partition_key=f"o{n}", deliver_at=now)
        due = {i: now - timedelta(minutes=5) for i in (4, 5, 6)}
        due |= {i: now - timedelta(minutes=1) for i in (1, 2, 3)}
        due |= {i: now - timedelta(minutes=4, seconds=i) for i in range(7, 17)}
        for row_id, at in due.items():
            session.execute(
                outbox_messages.update()
                .where(outbox_messages.c.id == row_id)
                .values(available_at=at)
            )
    with engine.begin() as connection:
        claimed = claim_due(connection, now=now, limit=4)
    assert [1, 2, 3, 4] == [row.id for row in claimed]  # was [16]: one row of four
