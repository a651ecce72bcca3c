"""Crashes and outages with real processes, PostgreSQL and RabbitMQ: the relay killed between
publishing and committing, the worker killed between committing and acknowledging, the broker
stopped while messages flow. Each business effect must still happen exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu import Connection

from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, outbox_count, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
    pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True),
]


@pytest.fixture
def bank(database_url: str, broker_url: str) -> Iterator[Bank]:
    with bank_endpoint(database_url, broker_url) as bank:
        yield bank


def _environment(bank: Bank, failpoints: str = "") -> dict[str, str]:
    return {
        **os.environ,
        "BANK_ENDPOINT": bank.app.name,
        "BANK_EXCHANGE": bank.app.exchange,
        "SAGABOX_DATABASE_URL": bank.app.database_url,
        "SAGABOX_BROKER_URL": bank.app.broker_url,
        "SAGABOX_FAILPOINTS": failpoints,
    }


def _sagabox(bank: Bank, *args: str, failpoints: str = "") -> subprocess.CompletedProcess[str]:
    """Run `sagabox ARGS` as its own process against the bank's database and broker."""
    return subprocess.run(
        [sys.executable, "-m", "sagabox.cli", *args],
        cwd=REPO,
        env=_environment(bank, failpoints),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _start(bank: Bank, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sagabox.cli", *args],
        cwd=REPO,
        env=_environment(bank),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _relay_args(bank: Bank) -> list[str]:
    return ["relay", "--exchange", bank.app.exchange, "--poll-interval", "0.2"]


def _queue_depth(bank: Bank) -> int:
    with Connection(bank.app.broker_url) as connection:
        declared = bank.worker.queue()(connection.channel()).queue_declare(passive=True)
        return int(declared.message_count)


def test_relay_killed_after_publishing_before_committing_publishes_again_once_effect(
    bank: Bank,
) -> None:
    """SIGKILL between the broker's confirms and the commit: the rows stay, the restarted relay
    publishes them a second time, and the worker books each deposit once."""
    deposits = [Deposit(account="a", amount=n) for n in range(20)]
    bank.send(*deposits)
    crashed = _sagabox(bank, *_relay_args(bank), "--once", failpoints="relay.after_publish=kill")
    assert -signal.SIGKILL == crashed.returncode, crashed.stderr
    assert 20 == outbox_count(bank.engine)  # nothing committed...
    assert 20 == _queue_depth(bank)  # ...but everything published and confirmed

    restarted = _sagabox(bank, *_relay_args(bank), "--once")
    assert 0 == restarted.returncode, restarted.stderr
    assert 0 == outbox_count(bank.engine)
    assert 40 == _queue_depth(bank)

    worker = _sagabox(bank, "worker", "--app", "tests.bank_app:app", "--once")
    assert 0 == worker.returncode, worker.stderr
    assert "handled=20, duplicates=20" in worker.stdout
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)


def test_worker_killed_after_committing_before_acking_changes_nothing_on_redelivery(
    bank: Bank,
) -> None:
    """SIGKILL after the third message's commit, before its ack: the broker delivers it again
    and the inbox turns it away."""
    deposits = [Deposit(account="a", amount=n) for n in range(10)]
    bank.send(*deposits)
    bank.relay.drain()
    app = ("worker", "--app", "tests.bank_app:app", "--once")
    crashed = _sagabox(bank, *app, failpoints="worker.after_commit=kill@3")
    assert -signal.SIGKILL == crashed.returncode, crashed.stderr
    assert 3 == len(ledger_counts(bank.engine))
    assert 8 == _queue_depth(bank)  # 7 untouched, and the third one back

    restarted = _sagabox(bank, *app)
    assert 0 == restarted.returncode, restarted.stderr
    assert "handled=7, duplicates=1" in restarted.stdout
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)


def test_worker_killed_after_committing_a_batch_before_acking_it_changes_nothing(
    bank: Bank,
) -> None:
    """With `--batch-size 4`, SIGKILL after the second batch's commit: its four messages come
    back from the broker and the inbox turns every one of them away."""
    deposits = [Deposit(account="a", amount=n) for n in range(10)]
    bank.send(*deposits)
    bank.relay.drain()
    app = ("worker", "--app", "tests.bank_app:app", "--once", "--batch-size", "4")
    crashed = _sagabox(bank, *app, failpoints="worker.after_commit=kill@2")
    assert -signal.SIGKILL == crashed.returncode, crashed.stderr
    assert 8 == len(ledger_counts(bank.engine))
    assert 6 == _queue_depth(bank)  # the unacknowledged batch of four, and two untouched

    restarted = _sagabox(bank, *app)
    assert 0 == restarted.returncode, restarted.stderr
    assert "handled=2, duplicates=4" in restarted.stdout
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)


@pytest.mark.parametrize("batch_size", ["1", "10"], ids=["unbatched", "batched"])
def test_a_broker_outage_while_messages_flow_loses_nothing(
    bank: Bank, rabbitmq_control: Callable[[str], None], batch_size: str
) -> None:
    """A relay and a worker run as daemons while deposits are committed before, during and
    after RabbitMQ is stopped for 10 s: both back off, reconnect, and every deposit is booked
    once. SIGTERM then stops both with exit code 0. Batched, the outage may cut a batch off
    between its commit and its one multiple ack."""
    relay = _start(bank, *_relay_args(bank))
    worker = _start(bank, "worker", "--app", "tests.bank_app:app", "--batch-size", batch_size)
    deposits: list[Deposit] = []

    def send(count: int) -> None:
        batch = [Deposit(account="a", amount=len(deposits) + n) for n in range(count)]
        deposits.extend(batch)
        bank.send(*batch)

    try:
        send(20)
        wait_for(
            lambda: len(ledger_counts(bank.engine)) >= 10, timeout=60, what="traffic", every=0.05
        )
        rabbitmq_control("stop")
        outage_started = time.monotonic()
        try:
            for _ in range(10):
                send(2)
            # The outage lasts its 10 s whatever the machine's speed; this is the scenario's
            # length, not a wait for something to happen.
            time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
        finally:
            rabbitmq_control("start")
        send(20)
        wait_for(
            lambda: len(ledger_counts(bank.engine)) == len(deposits),
            timeout=120,
            what="all",
            every=0.05,
        )
    finally:
        for process in (relay, worker):
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60) for process in (relay, worker)]
    assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
    assert [0, 0] == [relay.returncode, worker.returncode], outputs
    relay_log, worker_log = outputs[0][1], outputs[1][1]
    assert "batch rolled back" in relay_log or "reconnecting" in worker_log
    assert "received SIGTERM, stopping" in relay_log
    assert "guest:guest" not in relay_log + worker_log
