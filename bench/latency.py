"""(d) Commit → broker latency at a steady rate: the relay woken by LISTEN/NOTIFY, and polling."""

from __future__ import annotations

import statistics
import threading
import time
import uuid

from kombu import Connection, Consumer, Queue, binding
from kombu.message import Message as BrokerMessage
from sqlalchemy.orm import Session

from bench.common import sagabox_process, stop
from outbox import Outbox
from outbox.database import make_engine
from relay.broker import ACCEPT, topic_exchange


def commit_to_broker_ms(
    url: str, broker: str, *, rate: float, seconds: float, listen: bool
) -> tuple[float, float, int]:
    """Commit one message every 1/`rate` s for `seconds` while a relay process ships them;
    return the p50 and p99 of commit → delivery in milliseconds, and the sample count."""
    from bench.apps import Step

    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    arrived: dict[str, float] = {}
    committed: dict[str, float] = {}
    writing_done = threading.Event()
    ready = threading.Event()

    def consume() -> None:
        with Connection(broker) as connection:
            queue = Queue(f"{exchange}-sink", [binding(topic_exchange(exchange), "bench.Step")])

            def on_message(message: BrokerMessage) -> None:
                arrived[message.properties["message_id"]] = time.time()
                message.ack()

            with Consumer(connection, [queue], on_message=on_message, accept=ACCEPT):
                ready.set()
                while not writing_done.is_set() or len(arrived) < len(committed):
                    try:
                        connection.drain_events(timeout=0.5)
                    except TimeoutError:
                        if writing_done.is_set():
                            break

    consumer = threading.Thread(target=consume)
    consumer.start()
    ready.wait(30)
    polling = [] if listen else ["--no-listen", "--poll-interval", "1.0"]
    relay = sagabox_process(
        "relay", "--db", url, "--broker", broker, "--exchange", exchange,
        "--log-level", "warning", *polling,
    )  # fmt: skip
    engine = make_engine(url)
    try:
        time.sleep(2.0)  # lets the relay start and LISTEN; the measurement starts after
        interval = 1.0 / rate
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            step = Step(key="k1")
            with Session(engine) as session, session.begin():
                Outbox(session).add(step)
            committed[str(step.message_id)] = time.time()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))  # paces the writer
        time.sleep(2.0)  # the last messages in flight
    finally:
        writing_done.set()
        consumer.join(timeout=30)
        stop(relay, timeout=30)
        engine.dispose()
    latencies = [(arrived[key] - at) * 1000 for key, at in committed.items() if key in arrived]
    percentiles = statistics.quantiles(latencies, n=100)
    return percentiles[49], percentiles[98], len(latencies)
