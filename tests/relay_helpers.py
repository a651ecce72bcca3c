"""Helpers for the relay and worker tests: an isolated bank endpoint, raw publishing, counts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from outbox import Message, Outbox
from outbox.tables import dead_letters, inbox_messages, outbox_messages
from relay import Relay, Worker
from relay.broker import topic_exchange
from sagabox import App
from tests.bank_app import business, make_app


@dataclass
class Bank:
    """A bank endpoint on this test's database and broker, with its own exchange and queue."""

    app: App
    worker: Worker
    relay: Relay

    @property
    def engine(self) -> Engine:
        return self.app.engine

    def send(self, *commands: Any) -> None:
        """Commit commands to the bank through the outbox, as a service would."""
        with Session(self.engine) as session, session.begin():
            for command in commands:
                Outbox(session).add(command, destination=self.app.name)

    def publish_raw(
        self,
        body: bytes | str,
        *,
        headers: Mapping[str, Any] | None,
        content_type: str | None,
        serializer: str | None = None,
    ) -> None:
        """Put a message straight onto the bank's queue, bypassing the outbox."""
        with Connection(self.app.broker_url) as connection:
            producer = Producer(connection.channel(), exchange=topic_exchange(self.app.exchange))
            producer.publish(
                body,
                routing_key=self.app.name,
                headers=dict(headers or {}),
                content_type=content_type,
                content_encoding="binary" if content_type else None,
                serializer=serializer,
                delivery_mode=2,
            )

    def close(self) -> None:
        self.relay.close()
        with Connection(self.app.broker_url) as connection:
            self.worker.queue()(connection.channel()).delete()
        self.app.engine.dispose()


@contextmanager
def bank_endpoint(database_url: str, broker_url: str, **options: Any) -> Iterator[Bank]:
    """A fresh bank endpoint whose queue exists (declared by its worker), removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    app = make_app(
        database=database_url,
        broker=broker_url,
        name=f"bank-{suffix}",
        exchange=f"test-{suffix}",
        retry=options.pop("retry", None),
    )
    business.create_all(app.engine)
    worker = app.worker(**options)
    worker.drain()  # declares the queue and its bindings
    bank = Bank(app, worker, app.relay())
    try:
        yield bank
    finally:
        bank.close()


def wait_for(
    condition: Callable[[], bool], *, timeout: float = 15.0, what: str, every: float = 0.01
) -> None:
    """Poll `condition` until it holds (a deadline, not a sleep standing in for an event)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def consume_until(bank: Bank, condition: Callable[[], bool], what: str) -> None:
    """Run the bank's worker in a thread until `condition` holds, then stop it and wait."""
    thread = threading.Thread(target=bank.worker.run)
    thread.start()
    try:
        wait_for(condition, what=what)
    finally:
        bank.worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def outbox_count(engine: Engine) -> int:
    return count(engine, outbox_messages)


def inbox_count(engine: Engine) -> int:
    return count(engine, inbox_messages)


def dead_letter_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(dead_letters).order_by(dead_letters.c.id)))


def through_one_worker(app: App, batch_size: int, *messages: Message) -> tuple[list[Any], Any]:
    """Send `messages` through `app`'s outbox, its relay and one worker (batches of
    `batch_size`) until nothing is left; return the dead letters and the worker's stats."""
    worker, relay = app.worker(batch_size=batch_size), app.relay()
    worker.drain()  # declares its queue, so that the relay's rows are routable
    with Session(app.engine) as session, session.begin():
        for message in messages:
            Outbox(session).add(message)
    relay.drain()
    worker.drain()
    relay.close()
    return dead_letter_rows(app.engine), worker.stats
