"""(k) A saga step's cost as the tables grow: pending timeouts in the outbox (0, 100k, 1M rows)
and journal lines (0, 1M, 10M), as ratios to the empty tables; goal: flat within 1.2x.

    python -m bench.growth --db postgresql://... [--tiny]

The step is the one that touches the indexes that grow: it reschedules a timeout (delete the
old outbox row by message id, insert the new one), saves the saga and writes a journal line.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import Event
from outbox.database import make_engine
from sagabox.testing import scratch_database
from sagas import Saga, SagaContext, SagaRuntime, Timeout, on

SAGAS = 100


class GrowthOpened(Event, type="bench.growth.Opened"):
    key: str


class GrowthPoked(Event, type="bench.growth.Poked"):
    key: str


class GrowthDue(Timeout, type="bench.growth.Due"):
    key: str


class GrowthData(BaseModel):
    pokes: int = 0


class GrowthSaga(Saga[GrowthData], name="bench.growth.Saga"):
    states = ["new", "open", {"name": "closed", "final": True}]
    transitions = [
        on(GrowthOpened, "new", "open", after="arm"),
        on(GrowthPoked, "open", None, after="arm"),
        on(GrowthDue, "open", "closed"),
    ]
    correlation = {GrowthOpened: "key", GrowthPoked: "key", GrowthDue: "key"}

    def arm(self, ctx: SagaContext, message: GrowthOpened | GrowthPoked) -> None:
        self.data.pokes += 1
        ctx.schedule("due", GrowthDue(key=message.key), after=timedelta(days=30))


_OUTBOX = """INSERT INTO sagabox_outbox_messages (message_id, type, destination, partition_key,
    payload, headers, available_at, attempts, created_at)
    SELECT gen_random_uuid(), 'x.Timeout', 'q', 'k' || (g % 100000), '{}', '{}'::jsonb,
    now() + interval '1 day' + g * interval '1 second', 0, now()
    FROM generate_series(1, :n) AS g"""
_JOURNAL = """INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, incarnation,
    version, trigger, message_id, outcome, at)
    SELECT gen_random_uuid(), 'x.Saga', 'c' || g, gen_random_uuid(), 1, 'x.M',
    gen_random_uuid(), 'transition', now() - g * interval '1 second'
    FROM generate_series(1, :n) AS g"""


def step_ms(engine: Engine, runtime: SagaRuntime, steps: int) -> float:
    """The median milliseconds of one rescheduling step, each in its own transaction."""
    timings = []
    for n in range(steps):
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            runtime.handle(session, GrowthPoked(key=f"g{n % SAGAS}"))
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def grow(postgres: str, fill: str, sizes: list[int], steps: int) -> list[tuple[int, float]]:
    """The step's cost after filling one table with each of `sizes` rows in turn."""
    measured = []
    with scratch_database(postgres) as url:
        engine = make_engine(url)
        runtime = SagaRuntime([GrowthSaga], endpoint="bench-growth")
        with Session(engine) as session, session.begin():
            for n in range(SAGAS):
                runtime.handle(session, GrowthOpened(key=f"g{n}"))
        present = 0
        for size in sizes:
            if size > present:
                with engine.begin() as connection:
                    connection.execute(text(fill), {"n": size - present})
                with engine.connect() as connection:
                    autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
                    autocommit.exec_driver_sql("VACUUM ANALYZE")
                present = size
            step_ms(engine, runtime, steps // 5)  # warm the cache on the grown table
            measured.append((size, step_ms(engine, runtime, steps)))
        engine.dispose()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--tiny", action="store_true", help="small sizes: does it still run")
    args = parser.parse_args()
    scale = 1000 if args.tiny else 1
    steps = 50 if args.tiny else 500
    print("| table grown | rows | step (median ms) | ratio to empty | goal |")
    print("|---|---|---|---|---|")
    for name, fill, sizes in (
        ("outbox (pending timeouts)", _OUTBOX, [0, 100_000 // scale, 1_000_000 // scale]),
        ("journal", _JOURNAL, [0, 1_000_000 // scale, 10_000_000 // scale]),
    ):
        measured = grow(args.db, fill, sizes, steps)
        empty = measured[0][1]
        for size, ms in measured:
            print(f"| {name} | {size:,} | {ms:.2f} | {ms / empty:.2f}x | ≤ 1.2x |", flush=True)


if __name__ == "__main__":
    main()
