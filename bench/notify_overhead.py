"""Does the outbox's NOTIFY trigger cut saga throughput on PostgreSQL?

Several threads each drive their own saga, one step per transaction (load, transition, save,
journal, one outbox row), while a relay-like connection LISTENs. Rounds alternate between the
trigger enabled and disabled, in one run on one server, and the result is their ratio: absolute
numbers on a shared machine mean little.

    python bench/notify_overhead.py [--threads 4] [--steps 400] [--rounds 3]

The database URL comes from $SAGABOX_BENCH_POSTGRES_URL or $SAGABOX_TEST_POSTGRES_URL (a server
started by `scripts/services.sh up`); a scratch database is created on it and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid

import psycopg
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from outbox import Command, Event
from outbox.database import make_engine
from sagabox.testing import scratch_database
from sagas import Saga, SagaContext, SagaRuntime, on


class Opened(Event, type="notifybench.Opened"):
    key: str


class Step(Event, type="notifybench.Step"):
    key: str


class Work(Command, type="notifybench.Work"):
    key: str


class Tally(BaseModel):
    steps: int = 0


class Stepper(Saga[Tally], name="notifybench.Stepper"):
    """One transition per message, each sending one command: a typical saga step."""

    states = ["new", "running"]
    transitions = [on(Opened, "new", "running"), on(Step, "running", None, after="step")]
    correlation = {Opened: "key", Step: "key"}

    def step(self, ctx: SagaContext, message: Step) -> None:
        self.data.steps += 1
        ctx.send(Work(key=message.key), to="worker")


def _round(engine: Engine, runtime: SagaRuntime, threads: int, steps: int) -> float:
    keys = [uuid.uuid4().hex for _ in range(threads)]
    for key in keys:
        with Session(engine) as session, session.begin():
            runtime.handle(session, Opened(key=key))

    def drive(key: str) -> None:
        for _ in range(steps):
            with Session(engine) as session, session.begin():
                runtime.handle(session, Step(key=key))

    workers = [threading.Thread(target=drive, args=(key,)) for key in keys]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * steps / (time.perf_counter() - started)


def _set_trigger(engine: Engine, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    with engine.begin() as connection:
        connection.execute(
            text(f"ALTER TABLE sagabox_outbox_messages {verb} TRIGGER sagabox_outbox_notify")
        )
        connection.execute(text("DELETE FROM sagabox_outbox_messages"))


def measure(url: str, *, threads: int, steps: int, rounds: int) -> tuple[float, float, int]:
    """Steps/s with the trigger and without (medians of alternating rounds), and how many
    notifications a LISTENer heard, on a scratch database of the server at `url`."""
    with scratch_database(url, prefix="bench") as scratch_url:
        scratch = make_url(scratch_url)
        engine = make_engine(scratch, pool_size=threads + 2)
        runtime = SagaRuntime([Stepper])
        stop = threading.Event()
        heard = [0]

        def listen() -> None:
            conninfo = scratch.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(conninfo, autocommit=True) as connection:
                connection.execute("LISTEN sagabox_outbox")
                while not stop.is_set():
                    heard[0] += sum(1 for _ in connection.notifies(timeout=0.2))

        listener = threading.Thread(target=listen)
        listener.start()
        _round(engine, runtime, threads, steps // 4)  # warm-up
        rates: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for enabled in (True, False):
                _set_trigger(engine, enabled)
                rates[enabled].append(_round(engine, runtime, threads, steps))
        stop.set()
        listener.join()
        engine.dispose()
    return statistics.median(rates[True]), statistics.median(rates[False]), heard[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400, help="saga steps per thread per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("SAGABOX_BENCH_POSTGRES_URL") or os.environ.get(
        "SAGABOX_TEST_POSTGRES_URL"
    )
    if not url:
        print("set $SAGABOX_BENCH_POSTGRES_URL (or start scripts/services.sh up)", file=sys.stderr)
        return 2
    on, off, heard = measure(url, threads=args.threads, steps=args.steps, rounds=args.rounds)
    print("| threads | steps/s with NOTIFY | steps/s without | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {args.threads} | {on:,.0f} | {off:,.0f} | {on / off:.2f} |")
    print(f"(median of {args.rounds} alternating rounds; {heard} notifications heard)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
