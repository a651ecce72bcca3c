"""(e) sagabox against procrastinate, end to end on the same PostgreSQL: N business
transactions each writing a row and one unit of work, until a worker has run them all."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

from kombu import Connection
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.common import REPO, sagabox_process, stop
from outbox import Outbox
from outbox.database import make_engine
from outbox.tables import inbox_messages
from relay import Relay

PEER_PYTHON = REPO / ".bench-venv" / "bin" / "python"

orders = Table("peer_orders", MetaData(), Column("id", String(40), primary_key=True))


def procrastinate_jobs_per_second(url: str, jobs: int) -> float | None:
    """The peer's rate, or None when its environment (.bench-venv) is not there."""
    if not PEER_PYTHON.exists():
        return None
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(  # noqa: S603 - the bench environment's interpreter, our script
        [str(PEER_PYTHON), str(Path(__file__).with_name("peer_procrastinate.py")), conninfo,
         str(jobs)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def sagabox_jobs_per_second(url: str, broker: str, jobs: int) -> float:
    """The same through sagabox: outbox in the business transaction, a relay, one worker."""
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({"BENCH_PEER_ENDPOINT": f"peer-{suffix}", "BENCH_EXCHANGE": f"peer-{suffix}"})
    from bench.apps import Job, peer_app

    peer_app.configure(database=url, broker=broker)
    engine = make_engine(url)
    orders.metadata.create_all(engine)
    queue = peer_app.worker().queue()
    with Connection(broker) as connection:
        bound = queue(connection.channel())
        bound.declare()
        environment = {
            "BENCH_PEER_ENDPOINT": peer_app.name,
            "BENCH_EXCHANGE": peer_app.exchange,
            "SAGABOX_DATABASE_URL": url,
            "SAGABOX_BROKER_URL": broker,
        }
        worker = sagabox_process(
            "worker", "--app", "bench.apps:peer_app", "--log-level", "warning",
            environment=environment,
        )  # fmt: skip
        while bound.queue_declare(passive=True).consumer_count == 0:
            time.sleep(0.1)  # waits for the worker to subscribe before the clock starts
        relay = Relay(engine, broker, exchange=peer_app.exchange, batch_size=200)
        relaying = threading.Thread(target=relay.run)
        relaying.start()
        started = time.perf_counter()
        try:
            for n in range(jobs):
                with Session(engine) as session, session.begin():
                    session.execute(insert(orders).values(id=f"o-{n}"))
                    Outbox(session).add(Job(key=f"o-{n}"))
            count = select(func.count()).select_from(inbox_messages)
            while True:
                with engine.connect() as connection:
                    if connection.execute(count).scalar_one() >= jobs:
                        break
                time.sleep(0.05)  # polls for the end; the end time is when it is seen
            seconds = time.perf_counter() - started
        finally:
            relay.stop()
            relaying.join(timeout=30)
            relay.close()
            stop(worker)
            bound.delete()
    engine.dispose()
    return jobs / seconds
