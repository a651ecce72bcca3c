"""(d) Commit → broker latency at a steady rate: the relay woken by LISTEN/NOTIFY, and polling.

Writers, the relay and the consumer that timestamps arrivals are separate processes, so that
no interpreter lock delays a timestamp; all of them read the same wall clock.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event
from pathlib import Path

from kombu import Connection, Consumer, Queue, binding
from kombu.message import Message as BrokerMessage
from sqlalchemy.orm import Session

from bench.common import (
    load_average,
    machine_busy,
    sagabox_process,
    scratch_database,
    server_urls,
    stop,
)
from outbox import Outbox
from outbox.database import make_engine
from relay.broker import ACCEPT, topic_exchange

# Business transactions commit from several processes: one client alone commits only so fast.
WRITERS = 4


def commit_to_broker_ms(
    url: str,
    broker: str,
    *,
    rate: float,
    seconds: float,
    listen: bool,
    profile_to: Path | None = None,
) -> tuple[float, float, int]:
    """Commit messages at `rate` per second (from `WRITERS` processes) for `seconds` while a
    relay process ships them; return the p50 and p99 of commit → delivery in milliseconds, and
    the number of messages (fewer than `rate * seconds` if the writers could not keep up)."""
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    spawn = multiprocessing.get_context("spawn")
    ready, writing_done = spawn.Event(), spawn.Event()
    arrivals, arrivals_sent = spawn.Pipe(duplex=False)
    consumer = spawn.Process(target=_consume, args=(broker, exchange, ready, writing_done,
                                                    arrivals_sent))  # fmt: skip
    consumer.start()
    if not ready.wait(60):
        raise RuntimeError("the latency consumer did not start")
    polling = [] if listen else ["--no-listen", "--poll-interval", "1.0"]
    relay = sagabox_process(
        "relay", "--db", url, "--broker", broker, "--exchange", exchange,
        "--log-level", "warning", *polling, profile_to=profile_to,
    )  # fmt: skip
    committed: dict[str, float] = {}
    try:
        time.sleep(2.0)  # lets the relay start and LISTEN; the measurement starts after
        start_at = time.time() + 1.0  # every writer begins at the same instant
        pipes = []
        writers = []
        for _ in range(WRITERS):
            receive, send = spawn.Pipe(duplex=False)
            writer = spawn.Process(target=_write, args=(url, rate / WRITERS, start_at, seconds,
                                                        send))  # fmt: skip
            writer.start()
            pipes.append(receive)
            writers.append(writer)
        for receive in pipes:
            committed.update(receive.recv())
        for writer in writers:
            writer.join(timeout=60)
        time.sleep(2.0)  # the last messages in flight
    finally:
        writing_done.set()
        arrived: dict[str, float] = arrivals.recv() if arrivals.poll(60) else {}
        consumer.join(timeout=30)
        stop(relay, timeout=30)
    latencies = [(arrived[key] - at) * 1000 for key, at in committed.items() if key in arrived]
    percentiles = statistics.quantiles(latencies, n=100)
    return percentiles[49], percentiles[98], len(latencies)


def _write(url: str, rate: float, start_at: float, seconds: float, report: Pipe) -> None:
    """One writer process: a business transaction with one outbox message every 1/`rate` s."""
    from bench.apps import Step

    engine = make_engine(url)
    committed: dict[str, float] = {}
    time.sleep(max(0.0, start_at - time.time()))  # waits for the common start
    interval = 1.0 / rate
    next_at = time.monotonic()
    deadline = next_at + seconds
    while time.monotonic() < deadline:
        step = Step(key="k1")
        with Session(engine) as session, session.begin():
            Outbox(session).add(step)
        committed[str(step.message_id)] = time.time()
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))  # paces the writer
    engine.dispose()
    report.send(committed)


def _consume(broker: str, exchange: str, ready: Event, writing_done: Event, report: Pipe) -> None:
    """The consumer process: timestamp each message as it arrives, until the writers are done
    and the queue has been quiet for half a second."""
    arrived: dict[str, float] = {}
    with Connection(broker) as connection:
        queue = Queue(f"{exchange}-sink", [binding(topic_exchange(exchange), "bench.Step")])

        def on_message(message: BrokerMessage) -> None:
            arrived[message.properties["message_id"]] = time.time()
            message.ack()

        with Consumer(connection, [queue], on_message=on_message, accept=ACCEPT):
            ready.set()
            while True:
                try:
                    connection.drain_events(timeout=0.5)
                except TimeoutError:
                    if writing_done.is_set():
                        break
    report.send(arrived)


def main() -> int:
    """`python -m bench.latency RATE SECONDS ROUNDS`: (d) alone, with LISTEN/NOTIFY, on the
    servers of `scripts/services.sh` (start them with SAGABOX_PG_DURABLE=1 for durable commits)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("rate", type=float, help="messages committed per second")
    parser.add_argument("seconds", type=float, help="how long each round writes")
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    args = parser.parse_args()
    servers = server_urls()
    if servers is None:
        return 2
    postgres, amqp = servers
    for round_number in range(1, args.rounds + 1):
        load = load_average()
        with scratch_database(postgres) as url, machine_busy() as busy:
            p50, p99, count = commit_to_broker_ms(
                url, amqp, rate=args.rate, seconds=args.seconds, listen=True
            )
        print(
            f"round {round_number}: {count} messages ({count / args.seconds:,.0f}/s), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, CPU {busy[0]:.0%} busy, load before {load}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
