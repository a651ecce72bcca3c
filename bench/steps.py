"""(b) Saga steps per second through the toolkit: worker processes consuming RabbitMQ, each
message one saga step (inbox, load, transition, save, journal), one transaction per message or,
batched, one per `--batch-size` messages."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

from kombu import Connection
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.common import sagabox_process, stop, wait_for_inbox
from outbox import Outbox
from outbox.database import make_engine
from outbox.tables import inbox_messages
from relay import Relay


def saga_steps_per_second(
    url: str,
    broker: str,
    *,
    workers: int,
    messages: int,
    batch_size: int = 1,
    profile_to: Path | None = None,
) -> float:
    """Queue `messages` steps for 1,000 sagas, then time `workers` worker processes on them
    (the first one sampled by py-spy into `profile_to`, if given)."""
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({"BENCH_ENDPOINT": f"bench-{suffix}", "BENCH_EXCHANGE": f"bench-{suffix}"})
    from bench.apps import Opened, Step, app

    app.configure(database=url, broker=broker)
    engine = make_engine(url)
    rng = random.Random(1)  # noqa: S311 - a reproducible spread, not cryptography
    with Session(engine) as session, session.begin():
        for n in range(1000):
            app.runtime.handle(session, Opened(key=f"k{n}"))
        outbox = Outbox(session)
        for _ in range(messages):
            outbox.add(Step(key=f"k{rng.randrange(1000)}"))
    queue = app.worker().queue()
    with Connection(broker) as connection:
        queue(connection.channel()).declare()
    relay = Relay(engine, broker, exchange=app.exchange, batch_size=500)
    relay.drain()  # everything waits on the queue before a worker starts
    relay.close()
    environment = {
        # The app module is imported once per process: its workers must serve the same queue.
        "BENCH_ENDPOINT": app.name,
        "BENCH_EXCHANGE": app.exchange,
        "SAGABOX_DATABASE_URL": url,
        "SAGABOX_BROKER_URL": broker,
    }
    arguments = (
        "worker", "--app", "bench.apps:app", "--prefetch", str(max(100, 2 * batch_size)),
        "--batch-size", str(batch_size), "--log-level", "warning",
    )  # fmt: skip
    processes = [
        sagabox_process(
            *arguments, environment=environment, profile_to=profile_to if n == 0 else None
        )
        for n in range(workers)
    ]
    try:
        wait_for_inbox(engine, messages, every=0.2)  # the rate comes from the rows' times
    finally:
        stop(*processes)
    with engine.connect() as connection:
        first, last = connection.execute(
            select(func.min(inbox_messages.c.processed_at), func.max(inbox_messages.c.processed_at))
        ).one()
    engine.dispose()
    with Connection(broker) as connection:
        queue(connection.channel()).delete()
    return float((messages - 1) / (last - first).total_seconds())
