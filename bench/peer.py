"""(e) sagabox against procrastinate, end to end on the same PostgreSQL: N business
transactions each writing a row and one unit of work, until a worker has run them all."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection
from sqlalchemy import Column, MetaData, String, Table, insert
from sqlalchemy.engine import make_url

from bench.common import REPO, sagabox_process, stop, wait_for_inbox
from outbox import Outbox
from outbox.database import make_engine
from relay import Relay

PEER_PYTHON = REPO / ".bench-venv" / "bin" / "python"

orders = Table("peer_orders", MetaData(), Column("id", String(40), primary_key=True))


@dataclass(frozen=True)
class PeerRun:
    """Seconds spent deferring `jobs` in business transactions, then running them all."""

    jobs: int
    defer_seconds: float
    run_seconds: float

    @property
    def defers_per_second(self) -> float:
        return self.jobs / self.defer_seconds

    @property
    def runs_per_second(self) -> float:
        return self.jobs / self.run_seconds

    @property
    def end_to_end(self) -> float:
        return self.jobs / (self.defer_seconds + self.run_seconds)


def procrastinate_run(url: str, jobs: int) -> PeerRun | None:
    """The peer's run, or None when its environment (.bench-venv) is not there."""
    if not PEER_PYTHON.exists():
        return None
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(  # noqa: S603 - the bench environment's interpreter, our script
        [str(PEER_PYTHON), str(Path(__file__).with_name("peer_procrastinate.py")), conninfo,
         str(jobs)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    defer_seconds, run_seconds = map(float, result.stdout.strip().splitlines()[-1].split())
    return PeerRun(jobs, defer_seconds, run_seconds)


def sagabox_run(url: str, broker: str, jobs: int, *, batch_size: int) -> PeerRun:
    """The same through sagabox: the outbox in each business transaction; then a relay and one
    worker (`--batch-size`) ship and run the backlog, timed until the last inbox row."""
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({"BENCH_PEER_ENDPOINT": f"peer-{suffix}", "BENCH_EXCHANGE": f"peer-{suffix}"})
    from bench.apps import Job, peer_app

    peer_app.configure(database=url, broker=broker)
    engine = make_engine(url)
    orders.metadata.create_all(engine)
    queue = peer_app.worker().queue()
    environment = {
        "BENCH_PEER_ENDPOINT": peer_app.name,
        "BENCH_EXCHANGE": peer_app.exchange,
        "SAGABOX_DATABASE_URL": url,
        "SAGABOX_BROKER_URL": broker,
    }
    with Connection(broker) as connection:
        bound = queue(connection.channel())
        bound.declare()
        # A worker process is up and subscribed before the clock starts, as procrastinate's
        # in-process worker needs no interpreter of its own to start.
        worker = sagabox_process(
            "worker", "--app", "bench.apps:peer_app", "--log-level", "warning",
            "--batch-size", str(batch_size), "--prefetch", str(max(50, 2 * batch_size)),
            environment=environment,
        )  # fmt: skip
        relay = Relay(engine, broker, exchange=peer_app.exchange, batch_size=500)
        relaying = threading.Thread(target=relay.run)
        try:
            while bound.queue_declare(passive=True).consumer_count == 0:
                time.sleep(0.1)  # waits for the worker to subscribe
            started = time.perf_counter()
            for n in range(jobs):
                # A Core connection, as the peer writes through a plain psycopg connection;
                # an ORM Session works the same (Outbox takes either) at some cost of its own.
                with engine.begin() as business:
                    business.execute(insert(orders), {"id": f"o-{n}"})
                    Outbox(business).add(Job(key=f"o-{n}"))
            deferred = time.perf_counter()
            relaying.start()
            wait_for_inbox(engine, jobs, every=0.02)
            ran = time.perf_counter()
        finally:
            relay.stop()
            if relaying.is_alive():
                relaying.join(timeout=30)
            relay.close()
            stop(worker)
            bound.delete()
    engine.dispose()
    return PeerRun(jobs, deferred - started, ran - deferred)
