"""Poison never blocks (issue 14, worker side): every bad delivery becomes one dead letter with
its reason, only an unusable database requeues, and the good messages around it flow on."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
from kombu import Connection, Producer
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from outbox import Command, Event, Outbox, default_registry, handles
from outbox.envelope import encode
from outbox.errors import MessageTooLarge
from outbox.limits import MAX_MESSAGE_BYTES_ENV
from relay import Worker
from relay.broker import topic_exchange
from relay.endpoint import Delivery
from relay.failures import classify
from sagabox import App
from sagabox.cli import main
from sagas import ConcurrencyConflict, Saga, SagaContext, on
from tests.bank_app import AccountOpened, Deposit, Deposited, deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, dead_letter_rows, wait_for

REPO = Path(__file__).resolve().parent.parent
SAGABOX = [sys.executable, "-m", "sagabox.cli"]
GOOD = encode(Deposit(account="a", amount=1))


@pytest.fixture(params=[1, 10], ids=["unbatched", "batched"])
def batch_size(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def bank(database_url: str, broker_url: str, batch_size: int) -> Iterator[Bank]:
    with bank_endpoint(database_url, broker_url, batch_size=batch_size) as bank:
        yield bank


@pytest.fixture
def failing_upcaster() -> Iterator[None]:
    """Version 0 of bank.Deposit has an upcaster that raises (a bug in the consumer's code)."""

    def upcast(payload: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("amount_cents")

    default_registry.upcaster(Deposit.type_name, from_version=0)(upcast)
    yield
    default_registry._upcasters.pop((Deposit.type_name, 0))


def _poison(kind: str) -> tuple[bytes, dict[str, Any]]:
    headers = dict(GOOD.headers)
    if kind == "nesting 100,000 deep":
        return b"[" * 100_000 + b"]" * 100_000, headers
    if kind == "an integer of 5,000 digits":
        return b'{"account": "a", "amount": ' + b"7" * 5000 + b"}", headers
    if kind == "an upcaster that raises":
        return GOOD.payload.encode(), {**headers, "sagabox-version": "0"}
    if kind == "a lone surrogate in the type":
        return GOOD.payload.encode(), {**headers, "sagabox-type": "bank.Dep\ud800sit"}
    if kind == "a lone surrogate in a header":
        return GOOD.payload.encode(), {**headers, "x-trace": "\udcff\udcfe"}
    raise AssertionError(kind)


POISON = {
    "nesting 100,000 deep": "RecursionError",
    "an integer of 5,000 digits": "ValueError",
    "an upcaster that raises": "an upcaster raised KeyError",
    "a lone surrogate in the type": "is not valid UTF-8 text",
    "a lone surrogate in a header": "is not valid UTF-8 text",
}


@pytest.mark.usefixtures("failing_upcaster")
@pytest.mark.parametrize("kind", sorted(POISON))
def test_poison_is_dead_lettered_once_and_its_neighbours_are_handled(
    bank: Bank, kind: str, batch_size: int
) -> None:
    """Issue 14 items 1 and 2: parser errors other than JSONDecodeError, a raising upcaster and
    lone surrogates in headers dead-letter that message with the reason, on its first delivery;
    nothing is requeued, and the good messages before and after it (in the same batch when
    batching) are handled once."""
    before, after = Deposit(account="b", amount=2), Deposit(account="c", amount=3)
    bank.send(before)
    bank.relay.drain()
    body, headers = _poison(kind)
    bank.publish_raw(body, headers=headers, content_type="application/json")
    bank.send(after)
    bank.relay.drain()

    assert 3 == bank.worker.drain()  # and nothing raised

    assert {before.message_id: 1, after.message_id: 1} == ledger_counts(bank.engine)
    [letter] = dead_letter_rows(bank.engine)
    assert POISON[kind] in letter.reason
    assert body == letter.body
    assert (2, 1, 0) == (
        bank.worker.stats.handled,
        bank.worker.stats.dead_lettered,
        bank.worker.stats.requeued,
    )
    assert 0 == bank.worker.drain()  # not requeued: the queue is empty


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_a_dead_letter_with_surrogates_everywhere_is_stored_escaped(bank: Bank) -> None:
    """Recording cannot fail on what the message holds: text is stored escaped, bytes raw."""
    bank.worker.process(
        Delivery(
            b"\xff\xfe raw",
            {"\ud800key": "\udcff", "sagabox-type": "\ud83d", "n": b"\x00\xff", "nul": "a\x00b"},
            "application/\udcffjson",
        )
    )
    [letter] = dead_letter_rows(bank.engine)
    assert b"\xff\xfe raw" == letter.body
    assert "application/\\udcffjson" == letter.content_type
    assert "\\ud83d" == letter.type
    assert "\\udcff" == letter.headers["\\ud800key"]
    assert "a\\x00b" == letter.headers["nul"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_a_dead_letter_whose_headers_were_escaped_is_not_replayed(
    bank: Bank, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq replay` would have sent the escaped text in place of the headers that came: a
    different message. It refuses, names the headers, and keeps the letter."""
    body, headers = _poison("a lone surrogate in a header")
    bank.publish_raw(body, headers=headers, content_type="application/json")
    assert 1 == bank.worker.drain()
    [letter] = dead_letter_rows(bank.engine)
    assert 1 == main(["dlq", "replay", str(letter.id), "--db", bank.app.database_url])
    error = capsys.readouterr().err
    assert "cannot be replayed" in error
    assert "x-trace" in error
    assert [letter.id] == [row.id for row in dead_letter_rows(bank.engine)]


def test_errors_are_sorted_in_one_place() -> None:
    """Only an unusable database is `database_unavailable`; everything else is bad input."""
    unavailable = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    wrapped = RuntimeError("while recording")
    wrapped.__cause__ = unavailable
    assert "database_unavailable" == classify(unavailable)
    assert "database_unavailable" == classify(wrapped)
    for bad in (
        RecursionError(),
        ValueError("digits"),
        KeyError("x"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        MessageTooLarge(),
    ):
        assert "bad_input" == classify(bad)


# --- item 3: AMQP properties that are not UTF-8 -------------------------------------------------


def _publish_with_raw_properties(
    amqp_url: str, exchange: str, routing_key: str, body: bytes, **properties: Any
) -> None:
    """Publish with py-amqp itself: it sends bytes properties as they are, which is how a
    hostile or broken publisher puts non-UTF-8 bytes into `content_type` or `message_id`."""
    url = Connection(amqp_url)
    connection = amqp.Connection(
        host=f"{url.hostname}:{url.port}",
        userid=url.userid,
        password=url.password,
        virtual_host=url.virtual_host,
    )
    connection.connect()
    try:
        channel = connection.channel()
        channel.basic_publish(
            amqp.Message(body, delivery_mode=2, **properties),
            exchange=exchange,
            routing_key=routing_key,
        )
    finally:
        connection.close()


RAW_PROPERTIES: dict[str, dict[str, Any]] = {
    "content_type": {"content_type": b"application/\xff\xfejson"},
    "message_id": {"content_type": "application/json", "message_id": b"\xc3\x28-id"},
}


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("broken", sorted(RAW_PROPERTIES))
def test_non_utf8_amqp_properties_are_dead_lettered_and_the_worker_keeps_consuming(
    bank: Bank, amqp_url: str, broken: str
) -> None:
    """Issue 14 item 3: py-amqp raised UnicodeDecodeError inside drain_events, so `Worker.run`
    died and every restarted worker died on the redelivery. Now the running worker
    dead-letters that message, naming the property, and handles the good one behind it."""
    _publish_with_raw_properties(
        amqp_url, bank.app.exchange, bank.app.name, GOOD.payload.encode(), **RAW_PROPERTIES[broken]
    )
    good = Deposit(account="b", amount=4)
    bank.send(good)
    bank.relay.drain()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            bank.worker.run()
        except BaseException as exc:  # the test reports it; the thread must not hide it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: bank.worker.stats.handled == 1 or not thread.is_alive(),
            what="the good message to be handled",
        )
        assert thread.is_alive(), errors
    finally:
        bank.worker.stop()
        thread.join(timeout=15)
    assert [] == errors
    assert {good.message_id: 1} == ledger_counts(bank.engine)
    [letter] = dead_letter_rows(bank.engine)
    assert broken in letter.reason
    assert "not UTF-8" in letter.reason
    assert GOOD.payload.encode() == letter.body
    assert 0 == bank.worker.drain()  # gone from the queue, not redelivered


# --- item 4: bindings follow the handlers ---------------------------------------------------


def _opened(ctx: Any, event: AccountOpened) -> None:
    """Version 1 of the endpoint subscribed to AccountOpened; version 2 does not."""


def _versions(bank: Bank) -> tuple[App, App]:
    v1 = App(
        bank.app.name,
        handlers=[deposit, handles(AccountOpened)(_opened)],
        database=bank.app.database_url,
        broker=bank.app.broker_url,
        exchange=bank.app.exchange,
    )
    v2 = App(
        bank.app.name,
        handlers=[deposit],
        database=bank.app.database_url,
        broker=bank.app.broker_url,
        exchange=bank.app.exchange,
    )
    return v1, v2


def _publish_event(bank: Bank, event: AccountOpened) -> None:
    envelope = encode(event)
    with Connection(bank.app.broker_url) as connection:
        Producer(connection.channel(), exchange=topic_exchange(bank.app.exchange)).publish(
            envelope.payload.encode(),
            routing_key=event.type_name,
            headers=envelope.headers,
            content_type="application/json",
            content_encoding="binary",
            delivery_mode=2,
        )


@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_a_deploy_that_removes_a_handler_removes_its_binding(bank: Bank) -> None:
    """Issue 14 item 4: after the handler of an event is removed, the queue no longer receives
    that event, and what was queued before the deploy is dropped and counted, not
    dead-lettered as "no handler"."""
    v1, v2 = _versions(bank)
    assert AccountOpened.type_name in v1.routing_keys()
    v1.worker().drain()  # version 1 declares its binding
    _publish_event(bank, AccountOpened(account="queued-before-the-deploy"))

    worker = v2.worker()
    assert 1 == worker.drain()  # version 2 unbinds, then meets the one queued before
    _publish_event(bank, AccountOpened(account="after-the-deploy"))
    assert 0 == worker.drain()  # no longer routed to this queue

    assert [] == dead_letter_rows(bank.engine)
    assert (1, 0) == (worker.stats.dropped, worker.stats.dead_lettered)
    assert AccountOpened.type_name in worker.stale_routing_keys()
    v1.engine.dispose()
    v2.engine.dispose()


# --- item 8: one size limit, enforced when a message is written ------------------------------


BIG = "x" * (2 * 1024 * 1024)


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_the_writer_refuses_a_message_over_the_limit_and_says_how_to_raise_it(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 item 8: `Outbox.add` raises `MessageTooLarge` naming the limit and the setting,
    in the caller's transaction; the same message passes once the limit is raised."""
    with pytest.raises(MessageTooLarge) as raised, Session(bank.engine) as session:
        Outbox(session).add(Deposit(account=BIG, amount=1), destination=bank.app.name)
    assert "1048576 bytes" in str(raised.value)
    assert MAX_MESSAGE_BYTES_ENV in str(raised.value)
    monkeypatch.setenv(MAX_MESSAGE_BYTES_ENV, str(4 * 1024 * 1024))
    with Session(bank.engine) as session, session.begin():
        Outbox(session).add(Deposit(account=BIG, amount=1), destination=bank.app.name)


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_a_handler_emitting_a_message_over_the_limit_dead_letters_its_cause(bank: Bank) -> None:
    """A 2 MiB event from a handler is no longer shipped and lost at the receiver: the
    handler's transaction fails, and the message it handled is dead-lettered saying why."""

    def fat(ctx: Any, command: Deposit) -> None:
        ctx.publish(Deposited(account=BIG, amount=command.amount))

    reason, retried = _dead_lettered_by(bank, fat)
    assert "emitted a message too large" in reason
    assert MAX_MESSAGE_BYTES_ENV in reason
    assert 0 == retried


def _dead_lettered_by(bank: Bank, handler: Any) -> tuple[str, int]:
    """Handle one deposit with `handler` in a worker of the bank's batch size, which must
    dead-letter it; the letter's reason, and how many times the worker retried."""
    app = App(
        bank.app.name,
        handlers=[handles(Deposit)(handler)],
        database=bank.app.database_url,
        broker=bank.app.broker_url,
        exchange=bank.app.exchange,
    )
    try:
        command = Deposit(account="a", amount=1)
        bank.send(command)
        bank.relay.drain()
        worker = app.worker(batch_size=bank.worker.batch_size)
        assert 1 == worker.drain()
        [letter] = dead_letter_rows(bank.engine)
        assert command.message_id == letter.message_id
        return letter.reason, worker.stats.retried
    finally:
        app.engine.dispose()


@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_an_oversized_delivery_is_kept_whole_and_replays_once_the_limit_is_raised(
    bank: Bank, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker dead-letters a delivery over the limit with all its bytes (it kept 64 KiB),
    `dlq replay` refuses it while the limit stands, saying how to raise it, and delivers it
    once every process's limit is raised."""
    big = Deposit(account="a", amount=1)
    envelope = encode(big)
    # 2 MiB of valid JSON whose white space is what makes it large.
    payload = b'{"account": "a", "amount": 1,' + b" " * len(BIG) + b'"seq": 0}'
    bank.publish_raw(payload, headers=envelope.headers, content_type="application/json")
    assert 1 == bank.worker.drain()
    [letter] = dead_letter_rows(bank.engine)
    assert payload == letter.body
    assert "over the message size limit" in letter.reason

    db = ["--db", bank.app.database_url]
    assert 1 == main(["dlq", "replay", str(letter.id), *db])
    assert MAX_MESSAGE_BYTES_ENV in capsys.readouterr().err
    assert [letter.id] == [row.id for row in dead_letter_rows(bank.engine)]  # nothing lost

    monkeypatch.setenv(MAX_MESSAGE_BYTES_ENV, str(4 * 1024 * 1024))
    assert 0 == main(["dlq", "replay", str(letter.id), *db])
    bank.relay.drain()
    worker = bank.app.worker()  # a worker started with the raised limit
    assert 1 == worker.drain()
    assert {big.message_id: 1} == ledger_counts(bank.engine)
    assert [] == dead_letter_rows(bank.engine)


# --- --once, retried_at_once ----------------------------------------------------------------


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
@pytest.mark.parametrize("cli_batch", ["1", "10"])
def test_worker_once_exits_0_on_poison(bank: Bank, cli_batch: str) -> None:
    """`sagabox worker --once` with poison in the queue: exit 0, no traceback, the good
    message handled and the poison dead-lettered (it exited 1 with a traceback)."""
    bank.publish_raw(
        b"[" * 100_000 + b"]" * 100_000, headers=GOOD.headers, content_type="application/json"
    )
    good = Deposit(account="b", amount=5)
    bank.send(good)
    bank.relay.drain()
    done = subprocess.run(
        [*SAGABOX, "worker", "--app", "tests.bank_app:app", "--once", "--batch-size", cli_batch],
        cwd=REPO,
        env={
            **os.environ,
            "BANK_ENDPOINT": bank.app.name,
            "BANK_EXCHANGE": bank.app.exchange,
            "SAGABOX_DATABASE_URL": bank.app.database_url,
            "SAGABOX_BROKER_URL": bank.app.broker_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == done.returncode, done.stderr
    assert "Traceback" not in done.stderr
    assert {good.message_id: 1} == ledger_counts(bank.engine)
    assert 1 == len(dead_letter_rows(bank.engine))


class _AlwaysConflicting:
    """The bank endpoint, except that every dispatch loses an optimistic-locking race."""

    def __init__(self, app: App) -> None:
        self.name, self.registry = app.name, app.registry
        self.routing_keys, self.accepts = app.routing_keys, app.accepts
        self.begin_batch = app.begin_batch

    def dispatch(self, session: Session, message: Any) -> None:
        raise ConcurrencyConflict("lost a race")


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1], indirect=True)
def test_retried_at_once_counts_retries_not_attempts(bank: Bank) -> None:
    """Six attempts (the first and `immediate` = 5 retries) count 5 retries (it said 6)."""
    worker = Worker(
        bank.engine, bank.app.broker_url, _AlwaysConflicting(bank.app), retry=bank.app.retry
    )
    bank.send(Deposit(account="a", amount=1))
    bank.relay.drain()
    assert 1 == worker.drain()
    assert (5, 1) == (worker.stats.retried_at_once, worker.stats.retried)


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 10], indirect=True)
def test_one_structured_log_line_per_message(bank: Bank, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 16, worker part: one INFO line per message with endpoint, type, ids, saga,
    outcome and time; message data in it is escaped."""
    good = Deposit(account="a", amount=1, correlation_id="order 7")
    bank.send(good)
    bank.relay.drain()
    bank.publish_raw(
        b"{",
        headers={**GOOD.headers, "sagabox-correlation-id": "x\nforged"},
        content_type="application/json",
    )
    with caplog.at_level(logging.INFO, logger="sagabox.worker"):
        assert 2 == bank.worker.drain()
    lines = [r for r in caplog.records if r.getMessage().startswith("worker: message ")]
    assert 2 == len(lines)
    handled, dead = (r.sagabox for r in lines)  # type: ignore[attr-defined]
    assert {
        "endpoint": bank.app.name,
        "type": "bank.Deposit",
        "message_id": str(good.message_id),
        "correlation_id": "order 7",
        "saga": None,
        "outcome": "handled",
    } == {key: value for key, value in handled.items() if key != "ms"}
    assert "dead_lettered" == dead["outcome"]
    assert f"endpoint={bank.app.name} type=bank.Deposit" in lines[0].getMessage()
    assert 'correlation_id="order 7"' in lines[0].getMessage()
    assert "\n" not in lines[1].getMessage()  # the forged line break stays escaped


class _Begin(Event, type="poison.Begin"):
    key: str


class _Fat(Command, type="poison.Fat"):
    blob: str


class _Nothing(BaseModel):
    pass


class _FatSaga(Saga[_Nothing], name="poison.FatSaga"):
    """Emits a message over the limit when it starts."""

    states = ["new", "sent"]
    transitions = [on(_Begin, "new", "sent", after="send_fat")]
    correlation = {_Begin: "key"}

    def send_fat(self, ctx: SagaContext, message: _Begin) -> None:
        ctx.send(_Fat(blob=BIG), to="elsewhere")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_saga_emitting_a_message_over_the_limit_raises_in_the_callers_transaction(
    database_url: str,
) -> None:
    """Saga contexts write through `Outbox.add` when the saga is saved: the caller of
    `app.start` gets `MessageTooLarge`, and its transaction rolls back whole."""
    app = App("fat", sagas=[_FatSaga], database=database_url)
    with (
        pytest.raises(MessageTooLarge, match=r"poison\.Fat message"),
        Session(app.engine) as session,
        session.begin(),
    ):
        app.start(session, _FatSaga, _Begin(key="k"))
    with Session(app.engine) as session:
        assert app.runtime.load(session, _FatSaga, "k") is None
    app.engine.dispose()


@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
@pytest.mark.parametrize("batch_size", [1, 4], indirect=True)
def test_a_handler_emitting_to_a_destination_no_column_holds_dead_letters_its_cause(
    bank: Bank,
) -> None:
    """A destination or partition key the outbox refuses (too long, a NUL) would be refused
    again on every retry: the message handled is dead-lettered at once, saying why."""

    def misaddressed(ctx: Any, command: Deposit) -> None:
        ctx.send(Deposit(account="b", amount=command.amount), to="d" * 256)

    reason, retried = _dead_lettered_by(bank, misaddressed)
    assert "at most 255 characters" in reason
    assert 0 == retried
