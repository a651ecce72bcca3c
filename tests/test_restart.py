"""A worker or relay whose `run` returned after a stop can run again, as a bus that was stopped
can be started again (a service pausing its consumers, a test running one twice). Both used to
keep the stop: a second `run` returned at once, and a relay's second run did not listen."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from outbox import Outbox
from relay import Relay
from tests.bank_app import Deposit, Deposited
from tests.relay_helpers import bank_endpoint, consume_until, wait_for
from tests.test_relay import Listener, _listening_backends


@pytest.fixture
def listener(broker_url: str) -> Iterator[Listener]:
    listener = Listener(broker_url, Deposited.type_name, "bank")
    yield listener
    listener.close()


def test_a_stopped_worker_runs_again(database_url: str, amqp_url: str) -> None:
    with bank_endpoint(database_url, amqp_url) as bank:
        for number in (1, 2):
            bank.send(Deposit(account="a", amount=number))
            bank.relay.drain()

            def handled(count: int = number) -> bool:
                return bank.worker.stats.handled == count

            consume_until(bank, handled, f"deposit {number}")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_stopped_relay_runs_again_and_listens_again(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    """The second run ships a commit within seconds of it, with a 60 s poll: it is woken by
    NOTIFY again (written over a bare connection, which no in-process hook sees)."""
    relay = Relay(engine, broker_url, exchange=listener.exchange, poll_interval=60)
    for number in range(2):
        thread = threading.Thread(target=relay.run)
        thread.start()
        try:
            wait_for(lambda: _listening_backends(engine) == 1, what="LISTEN")
            wait_for(relay.idle.is_set, what="the relay to idle")
            with engine.begin() as connection:
                Outbox(connection).add(Deposited(account="a", amount=number))
            wait_for(lambda: len(listener.fetch()) == 1, timeout=10, what=f"event {number}")
        finally:
            relay.stop()
            thread.join(timeout=10)
        assert not thread.is_alive()
    assert 2 == relay.stats.published
