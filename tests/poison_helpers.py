"""Helpers for the relay poison tests: a listening queue, a full queue, the broker size limit."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu import Connection, Queue, binding
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox import Outbox
from outbox.messages import Message
from outbox.tables import outbox_messages
from relay.broker import topic_exchange

_SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"


class Listener:
    """A queue bound to some routing keys on a private exchange, read with basic.get."""

    def __init__(self, broker_url: str, *keys: str) -> None:
        self.exchange = f"test-{uuid.uuid4().hex[:8]}"
        self._connection = Connection(broker_url)
        self.queue = Queue(
            f"{self.exchange}-listener",
            [binding(topic_exchange(self.exchange), routing_key=key) for key in keys],
            durable=False,
            auto_delete=False,
        )(self._connection.channel())
        self.queue.declare()
        self.received: list[Any] = []

    def fetch(self) -> list[Any]:
        """Everything waiting now, acknowledged."""
        got = []
        while (message := self.queue.get(no_ack=True)) is not None:
            got.append(message)
        self.received.extend(got)
        return got

    def copies(self) -> Counter[str]:
        """How many times each message id arrived so far."""
        self.fetch()
        return Counter(str(m.properties["message_id"]) for m in self.received)

    def close(self) -> None:
        self.queue.delete()
        self._connection.release()


@contextmanager
def bounded_queue(broker_url: str, exchange: str, key: str, *, length: int) -> Iterator[Any]:
    """A queue on `exchange` for `key` that refuses (nacks) publishes beyond `length` messages."""
    with Connection(broker_url) as connection:
        queue = Queue(
            f"{exchange}-{key}",
            [binding(topic_exchange(exchange), routing_key=key)],
            durable=False,
            auto_delete=False,
            queue_arguments={"x-max-length": length, "x-overflow": "reject-publish"},
        )(connection.channel())
        queue.declare()
        try:
            yield queue
        finally:
            queue.delete()


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl against the RabbitMQ node scripts/services.sh started."""
    done = subprocess.run(
        [str(_SERVICES), "rabbitmqctl", *args], check=True, capture_output=True, text=True
    )
    return done.stdout


@contextmanager
def broker_message_limit(limit: int) -> Iterator[int]:
    """Lower RabbitMQ's max_message_size (a node setting, read when a channel opens)."""
    before = rabbitmqctl("eval", "application:get_env(rabbit, max_message_size).")
    match = re.search(r"\{ok,(\d+)\}", before)
    previous = match[1] if match else "134217728"
    rabbitmqctl("eval", f"application:set_env(rabbit, max_message_size, {limit}).")
    try:
        yield limit
    finally:
        rabbitmqctl("eval", f"application:set_env(rabbit, max_message_size, {previous}).")


def write(engine: Engine, *messages: Message, destination: str | None = None) -> None:
    """Commit messages to the outbox, one transaction."""
    with Session(engine) as session, session.begin():
        for message in messages:
            Outbox(session).add(message, destination=destination)


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(outbox_messages).order_by(outbox_messages.c.id)))
