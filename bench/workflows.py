"""(m) sagabox against DBOS on the same PostgreSQL: N three-step workflows, each step one
business-row update, completed per second and p50/p99 time to complete one.

Both sides are driven the same way (`bench.closed_loop`: a fixed number in flight, topped up as
the business table shows them done), and both stamp a workflow's start (the driver's clock when
it started it) and end (the database's clock in the last step's transaction) on its business
row, so one query reads both sides' figures. sagabox's side is two worker processes and a relay
process on RabbitMQ, each step a saga transition on its own delivery; DBOS's side is its own
interpreter (`.bench-venv`, `bench/peer_dbos.py`), two processes of `DBOS.start_workflow`, each
step a `@DBOS.transaction`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench.closed_loop import keep_in_flight
from bench.common import REPO, sagabox_process, stop
from outbox import Outbox
from outbox.database import make_engine
from sagabox import App

PEER_PYTHON = REPO / ".bench-venv" / "bin" / "python"

#: Processes on each side: sagabox's workers (plus its relay), DBOS's executors.
PROCESSES = 2

CREATE = text(
    "CREATE TABLE bench_chain (id text PRIMARY KEY, steps integer NOT NULL DEFAULT 0, "
    "started_at timestamptz, done_at timestamptz)"
)
SEED = text("INSERT INTO bench_chain (id) SELECT 'c-' || n FROM generate_series(0, :last) AS n")
FINISHED = text("SELECT count(*) FROM bench_chain WHERE done_at IS NOT NULL")
TIMES = text(
    "SELECT steps, extract(epoch FROM started_at), extract(epoch FROM done_at) FROM bench_chain"
)


@dataclass(frozen=True)
class ChainRun:
    """What one side did: workflows completed per second, and the time to complete one."""

    workflows: int
    per_second: float
    p50_ms: float
    p99_ms: float

    @property
    def steps_per_second(self) -> float:
        return 3 * self.per_second


def seed(engine: Engine, workflows: int) -> None:
    """The business table, one row per workflow (outside the timed part)."""
    with engine.begin() as connection:
        connection.execute(CREATE)
        connection.execute(SEED, {"last": workflows - 1})


def read_back(engine: Engine, workflows: int) -> ChainRun:
    """Both sides' figures from the business rows, after checking every step ran once."""
    with engine.connect() as connection:
        rows = connection.execute(TIMES).all()
    steps = sorted({row[0] for row in rows})
    if len(rows) != workflows or steps != [3]:
        raise RuntimeError(f"{len(rows)} workflows with step counts {steps}: expected 3 each")
    starts = [float(row[1]) for row in rows]
    latencies = [1000 * (float(row[2]) - float(row[1])) for row in rows]
    seconds = max(float(row[2]) for row in rows) - min(starts)
    percentiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return ChainRun(workflows, workflows / seconds, percentiles[49], percentiles[98])


def sagabox_run(
    url: str, broker: str, workflows: int, *, in_flight: int, batch_size: int
) -> ChainRun:
    """N sagas of three steps through a relay process and `PROCESSES` worker processes; each
    started by a business transaction that writes its first message to the outbox."""
    from bench.apps import Advanced, Begin, Chain

    # An endpoint and exchange of this run's own, named here rather than read from the
    # environment when bench.apps was first imported: two runs on one broker share nothing.
    name = f"chain-{uuid.uuid4().hex[:8]}"
    chain_app = App(name, sagas=[Chain], inputs=[Begin, Advanced], exchange=name)
    chain_app.configure(database=url, broker=broker)
    engine = make_engine(url)
    seed(engine, workflows)
    environment = {
        "BENCH_CHAIN_ENDPOINT": chain_app.name,
        "BENCH_EXCHANGE": chain_app.exchange,
        "SAGABOX_DATABASE_URL": url,
        "SAGABOX_BROKER_URL": broker,
    }
    queue = chain_app.worker().queue()
    with Connection(broker) as connection:
        bound = queue(connection.channel())
        bound.declare()
        processes = [
            sagabox_process(
                "worker", "--app", "bench.apps:chain_app", "--log-level", "warning",
                "--batch-size", str(batch_size), "--prefetch", str(max(100, 2 * batch_size)),
                environment=environment,
            )
            for _ in range(PROCESSES)
        ]  # fmt: skip
        relay = ("relay", "--db", url, "--broker", broker, "--exchange", chain_app.exchange,
                 "--log-level", "warning")  # fmt: skip
        processes.append(sagabox_process(*relay, environment=environment))
        try:
            while bound.queue_declare(passive=True).consumer_count < PROCESSES:
                time.sleep(0.1)  # waits for the workers to subscribe

            def start(n: int) -> None:
                with engine.begin() as business:
                    Outbox(business).add(Begin(key=f"c-{n}", started=time.time()))

            def finished() -> int:
                with engine.connect() as connection:
                    return int(connection.execute(FINISHED).scalar_one())

            keep_in_flight(start, finished, first=0, count=workflows, in_flight=in_flight)
        finally:
            stop(*processes)
            bound.delete()
    run = read_back(engine, workflows)
    engine.dispose()
    return run


def dbos_run(url: str, workflows: int, *, in_flight: int) -> ChainRun | None:
    """The same through DBOS, `PROCESSES` processes each driving its share; None when the
    bench environment (.bench-venv, with DBOS) is not there."""
    if not PEER_PYTHON.exists():
        return None
    engine = make_engine(url)
    seed(engine, workflows)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    share = workflows // PROCESSES
    peers = []
    for n in range(PROCESSES):
        first = n * share
        count = workflows - first if n == PROCESSES - 1 else share
        command = [str(PEER_PYTHON), str(Path(__file__).with_name("peer_dbos.py")), conninfo,
                   f"bench-{n}", str(first), str(count), str(in_flight // PROCESSES)]  # fmt: skip
        peers.append(
            subprocess.Popen(  # noqa: S603 - the bench environment's interpreter, our script
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        )
    try:
        for peer in peers:
            assert peer.stdout is not None
            if peer.stdout.readline().strip() != "ready":
                raise RuntimeError("the DBOS peer did not launch")
        for peer in peers:  # every process starts driving at once, after all have launched
            assert peer.stdin is not None
            peer.stdin.write("go\n")
            peer.stdin.flush()
        for peer in peers:
            if peer.wait(timeout=900) != 0:
                raise RuntimeError(f"the DBOS peer exited with {peer.returncode}")
    finally:
        for peer in peers:
            if peer.poll() is None:
                peer.kill()
    run = read_back(engine, workflows)
    engine.dispose()
    return run
