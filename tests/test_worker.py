"""The consumer worker: exactly-once effects through the inbox, retries, dead letters, and the
`sagabox dlq` and `inbox prune` commands. Runs on both databases and both brokers."""

from __future__ import annotations

import json
import pickle
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from outbox import Message, Outbox
from outbox.database import make_engine
from outbox.envelope import encode
from outbox.tables import outbox_messages
from relay import RetryPolicy, Worker
from sagabox import App
from sagabox.cli import main
from sagas import ConcurrencyConflict
from tests.bank_app import Audit, Deposit, Deposited, accounts, ledger, ledger_counts
from tests.relay_helpers import (
    Bank,
    bank_endpoint,
    dead_letter_rows,
    inbox_count,
    outbox_count,
)
from tests.saga_fixtures import (
    DocApproved,
    DocReview,
    LoanRequested,
    LoanSaga,
    OfferAccepted,
    RunCreditCheck,
)

pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def bank(database_url: str, broker_url: str) -> Any:
    with bank_endpoint(database_url, broker_url) as bank:
        yield bank


def _deliver(bank: Bank) -> None:
    bank.relay.drain()
    bank.worker.drain()


def test_a_message_delivered_twice_takes_effect_once(bank: Bank) -> None:
    """Two copies of one message (same id) book one ledger line; the second is a duplicate."""
    command = Deposit(account="a", amount=10)
    bank.send(command, command)
    bank.relay.drain()
    assert 2 == bank.worker.drain()
    assert {command.message_id: 1} == ledger_counts(bank.engine)
    assert (1, 1) == (bank.worker.stats.handled, bank.worker.stats.duplicates)
    assert 1 == inbox_count(bank.engine)


def test_effects_and_emitted_messages_commit_together(bank: Bank) -> None:
    """The handler's event is in the outbox of the same transaction, caused by the command."""
    command = Deposit(account="a", amount=10, correlation_id="order-1")
    bank.send(command)
    _deliver(bank)
    with bank.engine.connect() as connection:
        row = connection.execute(
            select(outbox_messages).where(outbox_messages.c.type == Deposited.type_name)
        ).one()
    assert str(command.message_id) == row.headers["sagabox-causation-id"]
    assert "order-1" == row.headers["sagabox-correlation-id"]
    assert Deposited.type_name == row.destination


def test_a_failing_message_is_retried_later_then_dead_lettered_without_blocking_others(
    bank: Bank, frozen_clock: FrozenDateTimeFactory
) -> None:
    """A handler error schedules delayed retries (1 s, 10 s, 60 s) as outbox rows for this
    endpoint only; the message behind it is processed at once; after the last retry the
    message is a dead letter with the error and the traceback."""
    with Session(bank.engine) as session, session.begin():
        session.execute(insert(accounts).values(id="closed", open=False))
    poison = Deposit(account="closed", amount=5)
    healthy = Deposit(account="a", amount=7)
    bank.send(poison, healthy)
    _deliver(bank)
    assert {healthy.message_id: 1} == ledger_counts(bank.engine)
    assert 1 == bank.worker.stats.retried

    for delay in (1, 10, 60):
        # Not due yet: the relay leaves the retry where it is.
        bank.relay.drain()
        assert 0 == bank.worker.drain()
        frozen_clock.tick(timedelta(seconds=delay))
        _deliver(bank)
    assert 3 == bank.worker.stats.retried
    assert 1 == bank.worker.stats.dead_lettered
    [letter] = dead_letter_rows(bank.engine)
    assert poison.message_id == letter.message_id
    assert 4 == letter.attempts
    assert "AccountClosed: account closed is closed" in letter.reason
    assert "raise AccountClosed" in letter.traceback
    assert bank.app.name == letter.endpoint


def test_dlq_replay_processes_a_dead_letter_once_its_cause_is_fixed(
    bank: Bank, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagabox dlq list/show/replay`: after the account is opened, the replayed deposit books."""
    with Session(bank.engine) as session, session.begin():
        session.execute(insert(accounts).values(id="closed", open=False))
    bank.worker.retry = RetryPolicy(delays=())
    poison = Deposit(account="closed", amount=5)
    bank.send(poison)
    _deliver(bank)
    [letter] = dead_letter_rows(bank.engine)
    db = ["--db", bank.app.database_url]

    assert 0 == main(["dlq", "list", "--json", *db])
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (letter.id, str(poison.message_id)) == (listed["id"], listed["message_id"])
    assert 0 == main(["dlq", "show", str(letter.id), *db])
    assert "raise AccountClosed" in capsys.readouterr().out

    with Session(bank.engine) as session, session.begin():
        session.execute(update(accounts).values(open=True))
    assert 0 == main(["dlq", "replay", str(letter.id), *db])
    _deliver(bank)
    assert {poison.message_id: 1} == ledger_counts(bank.engine)
    assert [] == dead_letter_rows(bank.engine)
    # A second replay of the same id is refused with a pointer to `dlq list`.
    assert 1 == main(["dlq", "replay", str(letter.id), *db])
    assert "dlq list" in capsys.readouterr().err


def test_dlq_discard_deletes(bank: Bank, capsys: pytest.CaptureFixture[str]) -> None:
    bank.send(Deposit(account="a", amount=-1))
    _deliver(bank)
    [letter] = dead_letter_rows(bank.engine)
    assert 0 == main(["dlq", "discard", str(letter.id), "--db", bank.app.database_url])
    assert [] == dead_letter_rows(bank.engine)
    assert 0 == main(["dlq", "list", "--db", bank.app.database_url])
    assert "no dead letters" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["replay", "discard"])
def test_dlq_goes_on_past_a_letter_it_cannot_act_on(
    bank: Bank, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    """`sagabox dlq replay|discard 999 N`: the missing letter is reported and the run exits 1,
    but letter N is still acted on (it stopped at the first, leaving N as it was)."""
    bank.send(Deposit(account="a", amount=-1))
    _deliver(bank)
    [letter] = dead_letter_rows(bank.engine)
    assert 1 == main(["dlq", action, "999999", str(letter.id), "--db", bank.app.database_url])
    err = capsys.readouterr().err
    assert "dead letter 999999: not" in err
    assert "1 of 2 dead letters not" in err
    assert [] == dead_letter_rows(bank.engine)


def test_unrecoverable_errors_skip_the_retries(bank: Bank) -> None:
    """A handler raising `Unrecoverable` dead-letters the message on its first failure."""
    bank.send(Deposit(account="a", amount=-1))
    _deliver(bank)
    [letter] = dead_letter_rows(bank.engine)
    assert 1 == letter.attempts
    assert "makes no sense" in letter.reason
    assert 0 == bank.worker.stats.retried


class _Boom:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _headers(message: Message) -> dict[str, str]:
    return encode(message).headers


def _hostile_cases(tmp_path: Path) -> dict[str, tuple[bytes, dict[str, Any] | None, str, str]]:
    """name → (body, headers, content type, a phrase the dead letter's reason must contain)."""
    valid = Deposit(account="a", amount=1)
    good_body = encode(valid).payload.encode()
    return {
        "pickle": (
            pickle.dumps(_Boom(tmp_path / "pwned")),
            _headers(valid),
            "application/x-python-serialize",
            "content type 'application/x-python-serialize' refused",
        ),
        "no headers": (good_body, None, "application/json", "missing or non-string headers"),
        "forged id": (
            good_body,
            {**_headers(valid), "sagabox-message-id": "'; DROP TABLE bank_ledger; --"},
            "application/json",
            "sagabox-message-id is missing or not a UUID",
        ),
        "metadata in payload": (
            json.dumps({"account": "a", "amount": 1, "message_id": str(valid.message_id)}).encode(),
            _headers(valid),
            "application/json",
            "belong in headers",
        ),
        "unknown type": (
            good_body,
            {**_headers(valid), "sagabox-type": "bank.Nonsense"},
            "application/json",
            "unknown message type 'bank.Nonsense'",
        ),
        "no handler here": (
            encode(Audit(account="a")).payload.encode(),
            _headers(Audit(account="a")),
            "application/json",
            "has no handler for 'bank.Audit'",
        ),
        "truncated JSON": (good_body[:-3], _headers(valid), "application/json", "not JSON"),
        "wrong types": (
            b'{"account": ["a"], "amount": "lots"}',
            _headers(valid),
            "application/json",
            "does not validate",
        ),
        "oversized": (
            b'{"account": "' + b"x" * 2_000_000 + b'", "amount": 1}',
            _headers(valid),
            "application/json",
            "over the message size limit of 1048576 bytes",
        ),
    }


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "case",
    [
        "pickle",
        "no headers",
        "forged id",
        "metadata in payload",
        "unknown type",
        "no handler here",
        "truncated JSON",
        "wrong types",
        "oversized",
    ],
)
def test_hostile_messages_are_dead_lettered_unread_and_the_next_one_is_processed(
    bank: Bank, case: str, tmp_path: Path
) -> None:
    """Each bad message lands in dead_letters at once with its reason, nothing of it runs, and
    a valid message behind it is processed."""
    body, headers, content_type, reason = _hostile_cases(tmp_path)[case]
    bank.publish_raw(body, headers=headers, content_type=content_type)
    follower = Deposit(account="b", amount=3)
    bank.send(follower)
    _deliver(bank)
    [letter] = dead_letter_rows(bank.engine)
    assert reason in letter.reason
    assert 1 == letter.attempts
    assert {follower.message_id: 1} == ledger_counts(bank.engine)
    assert not (tmp_path / "pwned").exists()
    assert body == letter.body  # kept byte for byte, for inspection (and replay)


class _FlakyEndpoint:
    """The real bank endpoint, except that its first `conflicts` dispatches lose a race."""

    def __init__(self, bank: Bank, conflicts: int) -> None:
        self._app = bank.app
        self.conflicts = conflicts
        self.name, self.registry = bank.app.name, bank.app.registry
        self.routing_keys, self.accepts = bank.app.routing_keys, bank.app.accepts
        self.begin_batch = bank.app.begin_batch

    def dispatch(self, session: Session, message: Message) -> None:
        self._app.dispatch(session, message)  # the effect happens, then is rolled back
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrencyConflict("lost a race")


@pytest.mark.parametrize(("conflicts", "outcome"), [(3, "handled"), (6, "retry_scheduled")])
def test_concurrency_conflicts_are_retried_at_once_a_bounded_number_of_times(
    bank: Bank, conflicts: int, outcome: str
) -> None:
    """Up to `immediate` (5) conflicts are retried in place; beyond that, a delayed retry."""
    worker = Worker(
        bank.engine, bank.app.broker_url, _FlakyEndpoint(bank, conflicts), retry=bank.app.retry
    )
    command = Deposit(account="a", amount=1)
    bank.send(command)
    bank.relay.drain()
    worker.drain()
    assert (1 if outcome == "handled" else 0) == worker.stats.handled
    assert (1 if outcome == "retry_scheduled" else 0) == worker.stats.retried
    expected = {command.message_id: 1} if outcome == "handled" else {}
    assert expected == ledger_counts(bank.engine)  # the rolled-back attempts left nothing


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_inbox_rows_are_pruned_after_the_retention(
    bank: Bank, frozen_clock: FrozenDateTimeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids older than the retention go, in batches; recent ones stay (worker and CLI)."""
    bank.send(Deposit(account="a", amount=1), Deposit(account="a", amount=2))
    _deliver(bank)
    frozen_clock.tick(timedelta(days=8))
    bank.send(Deposit(account="a", amount=3))
    _deliver(bank)
    assert 3 == inbox_count(bank.engine)
    assert 2 == bank.worker.prune_inbox(batch_size=1)
    assert 1 == inbox_count(bank.engine)
    frozen_clock.tick(timedelta(days=8))
    assert 0 == main(["inbox", "prune", "--older-than", "7d", "--db", bank.app.database_url])
    assert "pruned 1 ids" in capsys.readouterr().out
    assert 0 == inbox_count(bank.engine)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 10])
def test_connections_dropped_by_the_database_cost_one_retry_and_nothing_else(
    bank: Bank, batch_size: int
) -> None:
    """The server ends every connection the worker's pool holds (a restart, say): the next
    message fails once on its dead connection, is retried at once on a fresh one, and is booked
    once. The worker does not ping connections on checkout; this retry is what replaces it."""
    bank.worker.batch_size = batch_size
    first = Deposit(account="a", amount=1)
    bank.send(first)
    _deliver(bank)
    later = [Deposit(account="a", amount=n) for n in (2, 3)]
    bank.send(*later)
    bank.relay.drain()
    with make_engine(bank.app.database_url, poolclass=NullPool).connect() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert ended >= 1  # the connection the pool keeps for the worker
    assert 2 == bank.worker.drain()
    assert {m.message_id: 1 for m in [first, *later]} == ledger_counts(bank.engine)
    stats = bank.worker.stats
    assert 3 == stats.handled
    # Alone, the message is retried on a fresh connection; a batch is redone one by one.
    assert ((1, 0) if batch_size == 1 else (0, 1)) == (stats.retried_at_once, stats.batches_redone)


def test_ledger_is_untouched_by_a_rolled_back_attempt(bank: Bank) -> None:
    """Sanity for the tests above: a failed handler leaves no ledger line and no outbox row."""
    with Session(bank.engine) as session, session.begin():
        session.execute(insert(accounts).values(id="closed", open=False))
    bank.send(Deposit(account="closed", amount=1))
    bank.relay.drain()
    before = outbox_count(bank.engine)
    bank.worker.drain()
    with bank.engine.connect() as connection:
        assert [] == list(connection.execute(select(ledger)))
    assert before + 1 == outbox_count(bank.engine)  # only the retry row was added


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_the_worker_drives_sagas_from_the_events_they_subscribe_to(
    database_url: str, broker_url: str
) -> None:
    """An App with a saga binds the saga's event types: published events start and advance
    it, and what it sends goes to the outbox in the worker's transaction. A message the saga
    does not allow in its state is retried later, not lost."""
    app = App("loans", sagas=[LoanSaga], database=database_url, broker=broker_url)
    assert ["loans", *sorted(LoanSaga.message_types)] == app.routing_keys()
    worker, relay = app.worker(), app.relay()
    worker.drain()  # declares the queue
    with Session(app.engine) as session, session.begin():
        Outbox(session).add(LoanRequested(loan_id="L-1", amount=Decimal(900)))
        Outbox(session).add(OfferAccepted(loan_id="L-1"))  # too early: still checking
    relay.drain()
    assert 2 == worker.drain()
    with Session(app.engine) as session:
        saga = app.runtime.load(session, LoanSaga, "L-1")
        sent = session.execute(
            select(outbox_messages.c.destination).where(
                outbox_messages.c.type == RunCreditCheck.type_name
            )
        ).scalar_one()
    assert saga is not None
    assert ("checking", "credit") == (saga.state_name, sent)
    assert (1, 1) == (worker.stats.handled, worker.stats.retried)
    relay.close()
    app.engine.dispose()


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_saga_that_asks_for_it_dead_letters_messages_for_instances_that_do_not_exist(
    database_url: str, broker_url: str
) -> None:
    """`on_not_found = "dead_letter"`: no retries, the reason names the missing saga."""
    app = App("docs", sagas=[DocReview], database=database_url, broker=broker_url)
    worker, relay = app.worker(), app.relay()
    worker.drain()
    with Session(app.engine) as session, session.begin():
        Outbox(session).add(DocApproved(doc="D-9"))
    relay.drain()
    worker.drain()
    [letter] = dead_letter_rows(app.engine)
    assert 1 == letter.attempts
    assert "'D-9'" in letter.reason
    assert "does not exist" in letter.reason
    relay.close()
    app.engine.dispose()
