"""The relay fault test: poison rows (too big for the broker, nacked by a full queue, addressed
to an endpoint with no queue) among 10,000 good rows in 20 partition keys, two relays at once.

Every good row arrives exactly once, each key's rows in the order written, and each poison row
ends as a dead letter after its attempts. `make relay-faults` runs it with 100,000 rows on both
databases ($SAGABOX_RELAY_FAULT_ROWS, $SAGABOX_RELAY_FAULT_BACKENDS).
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox import Outbox
from outbox.dead_letters import list_dead_letters
from outbox.messages import Message
from relay import Relay
from tests.bank_app import Deposit, Deposited
from tests.poison_helpers import Listener, bounded_queue, broker_message_limit
from tests.relay_helpers import outbox_count, wait_for

ROWS = int(os.environ.get("SAGABOX_RELAY_FAULT_ROWS", "10000"))
KEYS = 20
ATTEMPTS = 3
_BROKER_LIMIT = 64 * 1024
#: destination → what the broker does with a row sent there, and what the dead letter says.
_POISON = {
    "oversized": ("big", "larger than configured max size"),
    "nacked": ("full", "nacked by the broker"),
    "unroutable": ("nobody", "unroutable"),
}


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    listener = Listener(amqp_url, Deposited.type_name)
    yield listener
    listener.close()


def _plan(rng: random.Random) -> tuple[list[tuple[str, Message, str | None]], dict[str, str]]:
    """The rows to write, in order, as (key, message, destination), and the poison rows' kinds.

    Two poison rows of each kind sit in six of the keys, at random places among their rows.
    """
    rows: list[tuple[str, Message, str | None]] = []
    seqs: Counter[str] = Counter()
    for _ in range(ROWS):
        key = f"p{rng.randrange(KEYS)}"
        rows.append(
            (key, Deposited(account=key, amount=1, seq=seqs[key], correlation_id=key), None)
        )
        seqs[key] += 1
    poison: dict[str, str] = {}
    for number, kind in enumerate(kind for kind in _POISON for _ in range(2)):
        key = f"p{number}"
        at = rng.randrange(len(rows))
        if kind == "oversized":
            message: Message = Deposited(account="x" * 100_000, amount=0, correlation_id=key)
            destination = None
        else:
            message = Deposit(account=key, amount=0, correlation_id=key)
            destination = _POISON[kind][0]
        poison[str(message.message_id)] = kind
        rows.insert(at, (key, message, destination))
    return rows, poison


def _write(engine: Engine, rows: list[tuple[str, Message, str | None]]) -> None:
    for start in range(0, len(rows), 500):
        with Session(engine) as session, session.begin():
            outbox = Outbox(session)
            for _key, message, destination in rows[start : start + 500]:
                outbox.add(message, destination=destination)


# PostgreSQL, where the two relays claim side by side; on SQLite they would take turns.
@pytest.mark.parametrize(
    "backend",
    os.environ.get("SAGABOX_RELAY_FAULT_BACKENDS", "postgresql").split(","),
    indirect=True,
)
def test_poison_rows_are_dead_lettered_while_two_relays_ship_every_good_row_once_in_order(
    engine: Engine, amqp_url: str, listener: Listener
) -> None:
    rows, poison = _plan(random.Random(14))  # noqa: S311 - a reproducible test mix
    _write(engine, rows)
    with (
        broker_message_limit(_BROKER_LIMIT),
        bounded_queue(amqp_url, listener.exchange, "full", length=0),
    ):
        relays = [
            Relay(
                engine,
                amqp_url,
                exchange=listener.exchange,
                batch_size=200,
                poll_interval=0.05,
                max_attempts=ATTEMPTS,
                retry_delay=timedelta(milliseconds=50),
            )
            for _ in range(2)
        ]
        threads = [threading.Thread(target=relay.run) for relay in relays]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: outbox_count(engine) == 0, timeout=120, what="the outbox to empty")
        finally:
            for relay in relays:
                relay.stop()
            for thread in threads:
                thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    good = len(rows) - len(poison)
    wait_for(lambda: len(listener.fetch()) == 0 and len(listener.received) >= good, what="all")
    copies = Counter(str(m.properties["message_id"]) for m in listener.received)
    expected = {str(message.message_id) for _key, message, _ in rows} - set(poison)
    assert expected == set(copies)
    assert {1} == set(copies.values())
    assert good == sum(relay.stats.published for relay in relays)

    arrived: dict[str, list[int]] = defaultdict(list)
    for message in listener.received:
        event = Deposited.model_validate_json(message.body)
        arrived[event.account].append(event.seq)
    # Every key in order, those with a poison row too: its rows behind waited for it.
    assert all(seqs == sorted(seqs) for seqs in arrived.values()), {
        key: seqs for key, seqs in arrived.items() if seqs != sorted(seqs)
    }

    with engine.connect() as connection:
        letters = list_dead_letters(connection)
    assert set(poison) == {str(letter.message_id) for letter in letters}
    for letter in letters:
        destination, says = _POISON[poison[str(letter.message_id)]]
        assert ATTEMPTS == letter.attempts
        assert says in letter.reason
        if destination != "big":
            assert destination == letter.endpoint
        else:
            assert Deposited.type_name == letter.endpoint
    assert len(poison) == sum(relay.stats.dead_lettered for relay in relays)
