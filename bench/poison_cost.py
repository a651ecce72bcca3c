"""(i) What a poison message costs its neighbours: good messages' handling time, p99.

A queue of good messages, and the same with one poison message (JSON nested 50,000 deep, the
kind that used to livelock a batch) per 1,000, drained by one in-process worker, unbatched and
in batches. Each good message's time is what the worker reports to its observer (the
`sagabox_worker` handling-seconds metric): in a batch, the batch's time shared by its members,
so a dead letter written beside them shows in their figure.
"""

from __future__ import annotations

import statistics
import uuid

from kombu import Connection, Producer

from bench.apps import Job, do_nothing
from outbox.envelope import encode
from relay.broker import topic_exchange
from relay.observe import Observer
from sagabox import App

POISON = b"[" * 50_000 + b"]" * 50_000


class _Times(Observer):
    """Collects the handling time of every message handled."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def message_processed(
        self, *, endpoint: str, message_type: str, outcome: str, seconds: float
    ) -> None:
        if outcome == "handled":
            self.seconds.append(seconds)


def good_p99_ms(
    url: str, broker: str, *, messages: int, poison_every: int | None, batch_size: int
) -> tuple[float, int]:
    """Drain `messages` good messages (and a poison one after every `poison_every`); return the
    good ones' p99 handling time in milliseconds and how many were dead-lettered."""
    suffix = uuid.uuid4().hex[:8]
    app = App(
        f"bench-poison-{suffix}",
        handlers=[do_nothing],
        database=url,
        broker=broker,
        exchange=f"bench-{suffix}",
    )
    times = _Times()
    worker = app.worker(batch_size=batch_size, observer=times)
    worker.drain()  # declares the queue
    with Connection(broker) as connection:
        producer = Producer(connection.channel(), exchange=topic_exchange(app.exchange))
        for index in range(messages):
            envelope = encode(Job(key=str(index)))
            producer.publish(
                envelope.payload.encode(),
                routing_key=app.name,
                headers=envelope.headers,
                content_type="application/json",
                content_encoding="binary",
                delivery_mode=2,
            )
            if poison_every and (index + 1) % poison_every == 0:
                producer.publish(
                    POISON,
                    routing_key=app.name,
                    headers=encode(Job(key="poison")).headers,
                    content_type="application/json",
                    content_encoding="binary",
                    delivery_mode=2,
                )
    try:
        worker.drain()
    finally:
        with Connection(broker) as connection:
            worker.queue()(connection.channel()).delete()
        app.engine.dispose()
    if len(times.seconds) != messages:
        raise RuntimeError(f"{len(times.seconds)} of {messages} good messages were handled")
    return statistics.quantiles(times.seconds, n=100)[98] * 1000, worker.stats.dead_lettered
