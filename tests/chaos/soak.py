"""The soak: N sagas through 2 relays and 2 workers (one of them in batches of 10), as processes,
on PostgreSQL and RabbitMQ, while a chaos loop SIGKILLs and restarts them at random, restarts
RabbitMQ once and cuts every database connection once. At the end every saga must be done,
every effect must exist exactly once, the outbox must be empty and no message dead-lettered.

    python -m tests.chaos.soak --sagas 10000          (or: make soak SAGAS=10000)

It needs the servers of `scripts/services.sh up` (their URLs in the environment).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kombu import Connection
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from bench.common import server_urls
from outbox import Outbox
from outbox.database import make_engine
from outbox.tables import dead_letters, outbox_messages
from sagabox.testing import scratch_database
from sagas.tables import saga_instances

REPO = Path(__file__).resolve().parent.parent.parent
SERVICES = REPO / "scripts" / "services.sh"


@dataclass
class Report:
    """What the soak did and found; `ok` when nothing was lost, doubled or left behind."""

    sagas: int
    seconds: float = 0.0
    kills: int = 0
    restarts: int = 0
    broker_restarts: int = 0
    connection_cuts: int = 0
    redelivered: int = 0
    duplicates_suppressed: int = 0
    unfinished: int = 0
    missing_effects: int = 0
    doubled_effects: int = 0
    outbox_left: int = 0
    dead_lettered: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.unfinished
            or self.missing_effects
            or self.doubled_effects
            or self.outbox_left
            or self.dead_lettered
        )

    def __str__(self) -> str:
        rows = [
            ("sagas", self.sagas),
            ("seconds", f"{self.seconds:.0f}"),
            ("processes killed (SIGKILL)", self.kills),
            ("processes restarted", self.restarts),
            ("RabbitMQ restarts", self.broker_restarts),
            ("database connection cuts", self.connection_cuts),
            ("deliveries the broker flagged redelivered", self.redelivered),
            ("duplicates suppressed by the inbox", self.duplicates_suppressed),
            ("sagas not done", self.unfinished),
            ("effects missing (lost)", self.missing_effects),
            ("effects doubled", self.doubled_effects),
            ("outbox rows left", self.outbox_left),
            ("dead letters", self.dead_lettered),
        ]
        lines = ["| soak | |", "| --- | ---: |", *(f"| {k} | {v} |" for k, v in rows)]
        return "\n".join(lines + self.notes + [f"result: {'PASS' if self.ok else 'FAIL'}"])


class Fleet:
    """The relays and workers, each restartable, each appending to its own log file."""

    def __init__(self, environment: dict[str, str], logs: Path) -> None:
        self._environment = environment
        self._logs = logs
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._files: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        role = name.split("-")[0]
        command = [sys.executable, "-m", "sagabox.cli", role]
        if role == "relay":
            exchange = self._environment["SOAK_EXCHANGE"]
            command += ["--poll-interval", "0.5", "--batch-size", "100", "--exchange", exchange]
        else:
            command += ["--app", "tests.chaos.soak_app:app", "--prefetch", "20"]
            if name == "worker-2":
                # One worker batches, so batches meet kills, restarts and one-by-one workers.
                command += ["--batch-size", "10"]
        if name not in self._files:
            self._files[name] = (self._logs / f"{name}.log").open("ab")
        log = self._files[name]
        self._processes[name] = subprocess.Popen(
            command, env=self._environment, cwd=REPO, stdout=log, stderr=log
        )

    def kill_and_restart(self, rng: random.Random) -> str:
        with self._lock:
            name = rng.choice(sorted(self._processes))
            process = self._processes[name]
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.start(name)
            return name

    def stop(self) -> list[int]:
        with self._lock:
            for process in self._processes.values():
                process.send_signal(signal.SIGTERM)
            codes = [process.wait(timeout=60) for process in self._processes.values()]
            for log in self._files.values():
                log.close()
            return codes

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self._logs.glob("*.log"))


def _count(engine: Engine, query: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())  # type: ignore[call-overload]


def _cut_connections(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        connection.commit()


def run_soak(*, postgres: str, broker: str, sagas: int, duration: float, seed: int = 7) -> Report:
    """Run the soak on a scratch database of the `postgres` server; return its report."""
    with scratch_database(postgres, prefix="soak") as url:
        return _soak(url, broker, sagas=sagas, duration=duration, seed=seed)


def _soak(url: str, broker: str, *, sagas: int, duration: float, seed: int) -> Report:
    report = Report(sagas)
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
    suffix = uuid.uuid4().hex[:8]
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SAGABOX_DATABASE_URL": url,
        "SAGABOX_BROKER_URL": broker,
        "SOAK_ENDPOINT": f"soak-{suffix}",
        "SOAK_EXCHANGE": f"soak-{suffix}",
        "SAGABOX_FAILPOINTS": "",
    }
    os.environ.update({k: environment[k] for k in ("SOAK_ENDPOINT", "SOAK_EXCHANGE")})
    from tests.chaos.soak_app import OrderStarted, app, business, effects

    app.configure(database=url, broker=broker)
    engine = make_engine(url, pool_pre_ping=True)
    business.create_all(engine)
    queue = app.worker().queue()
    with Connection(broker) as connection:
        queue(connection.channel()).declare()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"sagabox-soak-{suffix}"  # noqa: S108
    logs.mkdir(parents=True)
    fleet = Fleet(environment, logs)
    for name in ("relay-1", "relay-2", "worker-1", "worker-2"):
        fleet.start(name)
    started = time.monotonic()
    done = threading.Event()

    def restart_broker() -> None:
        subprocess.run([str(SERVICES), "rabbitmq-stop"], check=True, capture_output=True)
        time.sleep(3)  # the outage lasts 3 s, also when it comes after the starts
        subprocess.run([str(SERVICES), "rabbitmq-start"], check=True, capture_output=True)
        report.broker_restarts += 1

    def cut_connections() -> None:
        _cut_connections(engine)
        report.connection_cuts += 1

    def chaos() -> None:
        broker_restart_at, cut_at = 0.35 * duration, 0.6 * duration
        while not done.wait(rng.uniform(0.3, 1.5)):
            fleet.kill_and_restart(rng)
            report.kills += 1
            report.restarts += 1
            elapsed = time.monotonic() - started
            if not report.broker_restarts and elapsed > broker_restart_at:
                restart_broker()
            if not report.connection_cuts and elapsed > cut_at:
                cut_connections()
        # On a loaded machine the starts can be over before a one-off fault's turn came (a slow
        # broker restart eats the time): every fault still happens once, while the backlog runs.
        if not report.broker_restarts:
            restart_broker()
        if not report.connection_cuts:
            cut_connections()

    chaos_thread = threading.Thread(target=chaos, name="chaos")
    chaos_thread.start()
    try:
        batch = 20
        for first in range(0, sagas, batch):
            with Session(engine) as session, session.begin():
                outbox = Outbox(session)
                for n in range(first, min(first + batch, sagas)):
                    outbox.add(OrderStarted(order_id=f"o-{n}"))
            # Spread the starts over `duration`: this paces a load generator, it synchronises
            # nothing.
            ahead = started + duration * (first + batch) / sagas - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        done.set()
        chaos_thread.join()
        finished = (
            select(func.count())
            .select_from(saga_instances)
            .where(saga_instances.c.finished_at.is_not(None))
        )
        deadline = time.monotonic() + max(120.0, sagas / 10)
        while _count(engine, finished) < sagas or _count(
            engine, select(func.count()).select_from(outbox_messages)
        ):
            if time.monotonic() > deadline:
                report.notes.append("gave up waiting for the system to finish")
                break
            time.sleep(0.5)
    finally:
        done.set()
        chaos_thread.join()
        codes = fleet.stop()
        report.seconds = time.monotonic() - started
    report.notes.append(f"exit codes after SIGTERM: {codes}; logs in {logs}")
    report.unfinished = sagas - _count(engine, finished)
    with engine.connect() as connection:
        per_order: dict[str, int] = dict(
            connection.execute(
                select(effects.c.kind, func.count(func.distinct(effects.c.order_id))).group_by(
                    effects.c.kind
                )
            ).all()
        )
        rows: dict[str, int] = dict(
            connection.execute(select(effects.c.kind, func.count()).group_by(effects.c.kind)).all()
        )
    for kind in ("charge", "ship"):
        report.missing_effects += sagas - per_order.get(kind, 0)
        report.doubled_effects += rows.get(kind, 0) - per_order.get(kind, 0)
    report.outbox_left = _count(engine, select(func.count()).select_from(outbox_messages))
    report.dead_lettered = _count(engine, select(func.count()).select_from(dead_letters))
    text_of_logs = fleet.log_text()
    report.redelivered = text_of_logs.count("the broker redelivers a message")
    report.duplicates_suppressed = text_of_logs.count("was processed before; skipped")
    engine.dispose()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=300)
    parser.add_argument("--duration", type=float, default=None, help="seconds to start them over")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    urls = server_urls()
    if urls is None:
        return 2
    postgres, broker = urls
    duration = args.duration or max(30.0, args.sagas / 40)
    report = run_soak(
        postgres=postgres, broker=broker, sagas=args.sagas, duration=duration, seed=args.seed
    )
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
