"""(k) A saga step's cost, and the relay's claim cost, as the tables grow; goal: flat within 1.2x.

    python -m bench.growth --db postgresql://... [--tiny] [--rounds N]

Sizes, each as a ratio to the smallest: 1k / 100k / 1M saga instances, 0 / 100k / 1M pending
timeouts in the outbox, 0 / 1M / 10M journal lines, and a relay backlog of 0 / 1M due rows.
Each size lives in a scratch database of its own, filled on the server (`INSERT ... SELECT
generate_series`, cloning rows the runtime itself wrote, so every filler row has a real shape;
several saga types; the migrations' indexes, dropped during the fill and rebuilt from their own
definitions). Rounds then visit every database in turn, so the machine's noise falls on every
size alike. A step is what a worker does for one message: inbox row, saga load and save (its
timeout rescheduled: the old outbox row deleted by message id, a new one written), journal line,
commit. A claim is the relay's: lock up to a batch of due rows, delete them, commit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from outbox import Event, clock
from outbox.claim import claim_due, delete_rows
from outbox.database import make_engine
from outbox.inbox import Inbox
from sagabox.testing import scratch_database
from sagas import Saga, SagaContext, SagaRuntime, Timeout, on

#: Sagas the steps go round (at most: as many as the smallest size has instances); the filler
#: rows come on top of theirs.
SAGAS = 100
#: The relay's default batch size.
CLAIM_BATCH = 200
ENDPOINT = "bench-growth"
#: The partition keys' prefixes of the backlog's rows and of the rows each claim writes first.
BACKLOG_KEYS = "b"
CLAIMED_KEYS = "n"


class GrowthOpened(Event, type="bench.growth.Opened"):
    key: str


class GrowthPoked(Event, type="bench.growth.Poked"):
    key: str


class GrowthDue(Timeout, type="bench.growth.Due"):
    key: str


class GrowthData(BaseModel):
    pokes: int = 0
    customer: str = "C-1024"
    amount: str = "129.90"


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


# Every fill clones a template row the runtime wrote (`r`), changing only what identifies it;
# the rows belong to four saga types, one of them the stepped saga's own.
_INSTANCES = """INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, incarnation,
    state, data, version, definition_version, data_version, created_at, updated_at, finished_at,
    timeouts, next_timeout_at)
    SELECT gen_random_uuid(),
    (ARRAY['bench.growth.Saga', 'orders.Order', 'loans.Loan', 'billing.Subscription'])[g % 4 + 1],
    'f' || g, gen_random_uuid(),
    CASE WHEN g % 3 = 0 THEN 'closed' ELSE r.state END, r.data, r.version + g % 7,
    r.definition_version, r.data_version, :now - g * interval '1 second',
    :now - g * interval '100 ms', CASE WHEN g % 3 = 0 THEN :now - g * interval '100 ms' END,
    CASE WHEN g % 3 <> 0 THEN r.timeouts END,
    CASE WHEN g % 3 <> 0 THEN :now + interval '1 day' + (g % 2592000) * interval '1 second' END
    FROM (SELECT * FROM sagabox_saga_instances WHERE saga_type = 'bench.growth.Saga' LIMIT 1) r,
    generate_series(1, :n) AS g"""
# Timeouts due over the next 30 days, one a second, the first 1,800 of them in the last half
# hour (come due, for the relay to ship), as in a table that has been running for a while.
_TIMEOUTS = """INSERT INTO sagabox_outbox_messages (message_id, type, destination,
    partition_key, payload, headers, available_at, attempts, created_at)
    SELECT s.id, r.type, r.destination, s.key,
    (r.payload::jsonb || jsonb_build_object('key', s.key))::text,
    r.headers || jsonb_build_object('sagabox-message-id', s.id, 'sagabox-correlation-id', s.key),
    :now + (s.g % 2592000 - 1800) * interval '1 second', 0,
    :now - s.g * interval '1 second'
    FROM (SELECT * FROM sagabox_outbox_messages WHERE type = 'bench.growth.Due' LIMIT 1) r,
    (SELECT g, gen_random_uuid() AS id, 'f' || g AS key FROM generate_series(1, :n) AS g) s"""
_BACKLOG = """INSERT INTO sagabox_outbox_messages (message_id, type, destination,
    partition_key, payload, headers, available_at, attempts, created_at)
    SELECT s.id, 'bench.growth.Shipped', 'bench.growth.Shipped', s.key,
    jsonb_build_object('key', s.key)::text,
    r.headers || jsonb_build_object('sagabox-message-id', s.id, 'sagabox-correlation-id', s.key,
        'sagabox-type', 'bench.growth.Shipped'),
    :now - interval '1 hour' + s.g * interval '1 ms', 0, :now - interval '1 hour'
    FROM (SELECT * FROM sagabox_outbox_messages WHERE type = 'bench.growth.Due' LIMIT 1) r,
    (SELECT g, gen_random_uuid() AS id, :keys || (g % 10000) AS key
     FROM generate_series(1, :n) AS g) s"""
# One saga per ten lines, its lines spread over time as a busy stream interleaves them; one line
# in ten is for a saga that did not exist (no incarnation), as a stream's strays are.
_JOURNAL = """INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, incarnation,
    version, definition_version, from_state, to_state, trigger, message_id, outcome, at)
    SELECT md5('s' || s.k)::uuid,
    (ARRAY['bench.growth.Saga', 'orders.Order', 'loans.Loan', 'billing.Subscription'])[s.k % 4 + 1],
    'f' || s.k,
    CASE WHEN s.g % 10 <> 9 THEN md5('i' || s.k)::uuid END,
    CASE WHEN s.g % 10 <> 9 THEN s.g % 10 + 1 END, r.definition_version, r.from_state,
    r.to_state, r.trigger, gen_random_uuid(),
    CASE WHEN s.g % 10 <> 9 THEN r.outcome ELSE 'not_found' END,
    :now - (:n - s.g) * interval '10 ms'
    FROM (SELECT * FROM sagabox_saga_journal WHERE outcome = 'transition' LIMIT 1) r,
    (SELECT g, g % greatest(:n / 10, 1) AS k FROM generate_series(1, :n) AS g) s"""


#: Makes an empty migrated database and drops it afterwards (a test clones a template instead).
Scratch = Callable[[], AbstractContextManager[str]]


@dataclass(frozen=True)
class Size:
    """One database: the dimension it grows, its size there, and how it is filled."""

    dimension: str
    rows: int
    table: str = ""
    fill: str = ""

    @property
    def label(self) -> str:
        return f"{self.dimension}: {self.rows:,}"


def sizes(scale: int = 1) -> list[Size]:
    """The databases of one run, the smallest first (every ratio is to it): `scale` divides
    the filler rows (1000 for a smoke test)."""
    return [
        Size("saga instances", 1_000),
        Size("saga instances", 100_000, "sagabox_saga_instances", _INSTANCES),
        Size("saga instances", 1_000_000, "sagabox_saga_instances", _INSTANCES),
        Size("pending timeouts", 100_000, "sagabox_outbox_messages", _TIMEOUTS),
        Size("pending timeouts", 1_000_000, "sagabox_outbox_messages", _TIMEOUTS),
        Size("journal lines", 1_000_000, "sagabox_saga_journal", _JOURNAL),
        Size("journal lines", 10_000_000, "sagabox_saga_journal", _JOURNAL),
        Size("due outbox backlog", 1_000_000, "sagabox_outbox_messages", _BACKLOG),
    ] if scale == 1 else [
        Size(s.dimension, s.rows // scale, s.table, s.fill) for s in sizes()
    ]  # fmt: skip


def filler_rows(size: Size, base: Size) -> int:
    """How many rows the fill adds: the smallest size's sagas count among the instances."""
    return size.rows - base.rows if size.dimension == base.dimension else size.rows


@dataclass
class Timings:
    """Milliseconds of each step and each claim measured on one database."""

    steps: list[float] = field(default_factory=list)
    claims: list[float] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def stepped(base_instances: int) -> int:
    """How many sagas the steps go round."""
    return max(1, min(SAGAS, base_instances))


def seed(engine: Engine, runtime: SagaRuntime, base_instances: int) -> None:
    """The stepped sagas, and enough finished ones of other types to make `base_instances`."""
    with Session(engine) as session, session.begin():
        for n in range(stepped(base_instances)):
            runtime.handle(session, GrowthOpened(key=f"g{n}"))
    with engine.begin() as connection:
        connection.execute(
            text(_INSTANCES.replace("'f' || g", "'base' || g")),
            {"n": base_instances - stepped(base_instances), "now": clock.now()},
        )


def fill(engine: Engine, size: Size, rows: int) -> None:
    """Add the size's filler rows on the server, with the table's plain indexes dropped during
    the insert and rebuilt from their own definitions (what the migrations made) afterwards."""
    if size.fill and rows > 0:
        with engine.begin() as connection:
            indexes = _plain_indexes(connection, size.table)
            for name, _ in indexes:
                connection.exec_driver_sql(f'DROP INDEX "{name}"')
            parameters = {"n": rows, "now": clock.now(), "keys": BACKLOG_KEYS}
            added = connection.execute(text(size.fill), parameters)
            if added.rowcount != rows:  # no template row to clone: the size would be a lie
                raise RuntimeError(f"{size.label}: the fill added {added.rowcount} of {rows} rows")
            for _, definition in indexes:
                connection.exec_driver_sql(definition)
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.exec_driver_sql("VACUUM ANALYZE")


def _plain_indexes(connection: Connection, table: str) -> list[tuple[str, str]]:
    """The indexes of `table` that back no constraint: names and `CREATE INDEX` statements."""
    query = text(
        """SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relname = :table AND NOT EXISTS
            (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"""
    )
    return [(row[0], row[1]) for row in connection.execute(query, {"table": table})]


def step(engine: Engine, runtime: SagaRuntime, n: int, sagas: int) -> float:
    """One worker step for the `n`th of the `sagas` stepped sagas, in its own transaction; its
    milliseconds."""
    message = GrowthPoked(key=f"g{n % sagas}")
    started = time.perf_counter()
    with Session(engine) as session, session.begin():
        Inbox(session, ENDPOINT).record(message.message_id)
        runtime.handle(session, message)
    return (time.perf_counter() - started) * 1000


def claim(engine: Engine) -> float:
    """Write a batch of due rows (untimed, on the server), then time the relay's claim and
    delete of a batch: the oldest due rows, in a backlog the backlog's, so its size stays.

    The batch's keys are none of the backlog's: its rows are due an hour ago, inside the
    backlog's span for a while after the fill, and a row of a backlog key due before that key's
    older rows waits for them (per-key order), so the claims would ship fewer and fewer rows.
    """
    with engine.begin() as connection:
        parameters = {"n": CLAIM_BATCH, "now": clock.now(), "keys": CLAIMED_KEYS}
        connection.execute(text(_BACKLOG), parameters)
    started = time.perf_counter()
    with engine.begin() as connection:
        rows = claim_due(connection, now=clock.now(), limit=CLAIM_BATCH)
        delete_rows(connection, [row.id for row in rows])
    elapsed = (time.perf_counter() - started) * 1000
    assert len(rows) == CLAIM_BATCH, f"claimed {len(rows)} of {CLAIM_BATCH} due rows"
    return elapsed


@contextmanager
def databases(
    postgres: str, scale: int, only: Sequence[int] | None, scratch: Scratch | None = None
) -> Iterator[list[tuple[Size, Engine]]]:
    """A filled scratch database per size (those at the indexes `only`: the first is the
    smallest, the one every ratio is to), each with its engine."""
    with ExitStack() as stack:
        found = []
        runtime = SagaRuntime([GrowthSaga], endpoint=ENDPOINT)
        every = sizes(scale)
        for size in every if only is None else [every[i] for i in only]:
            started = time.perf_counter()
            fresh = scratch() if scratch else scratch_database(postgres, prefix="growth")
            url = stack.enter_context(fresh)
            engine = make_engine(url)
            stack.callback(engine.dispose)
            seed(engine, runtime, every[0].rows)
            fill(engine, size, filler_rows(size, every[0]))
            print(f"  filled {size.label} in {time.perf_counter() - started:.0f} s", flush=True)
            found.append((size, engine))
        yield found


def measure(
    postgres: str,
    *,
    scale: int = 1,
    rounds: int = 12,
    steps: int = 40,
    claims: int = 5,
    only: Sequence[int] | None = None,
    scratch: Scratch | None = None,
) -> list[tuple[Size, Timings]]:
    """Fill every size's database, then measure them in interleaved rounds (the first one only
    warms the caches); return each size's timings."""
    runtime = SagaRuntime([GrowthSaga], endpoint=ENDPOINT)
    with databases(postgres, scale, only, scratch) as filled:
        sagas = stepped(sizes(scale)[0].rows)
        timings = [Timings() for _ in filled]
        counter = 0
        for round_number in range(rounds + 1):
            # Rotate the order too: no size always runs right after the same neighbour.
            order = list(range(len(filled)))
            order = order[round_number % len(order) :] + order[: round_number % len(order)]
            for index in order:
                _, engine = filled[index]
                step_ms = [step(engine, runtime, counter + k, sagas) for k in range(steps)]
                claim_ms = [claim(engine) for _ in range(claims)]
                if round_number > 0:
                    timings[index].steps += step_ms
                    timings[index].claims += claim_ms
            counter += steps
        return [(size, timing) for (size, _), timing in zip(filled, timings, strict=True)]


def table(measured: list[tuple[Size, Timings]]) -> list[str]:
    """The markdown table of one run: medians, p95s and their ratios to the smallest size."""
    base = measured[0][1]
    lines = [
        "| what | size | median ms | p95 ms | median ratio | p95 ratio | goal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for what, pick in (("saga step", _steps), ("relay claim of 200", _claims)):
        for size, timing in measured:
            if pick is _claims and not _claim_matters(size, measured[0][0]):
                continue
            values, baseline = pick(timing), pick(base)
            lines.append(
                f"| {what} | {size.label} | {median(values):.2f} | {p95(values):.2f} | "
                f"{median(values) / median(baseline):.2f} | {p95(values) / p95(baseline):.2f} | "
                "≤ 1.2 |"
            )
    return lines


def summary(measured: list[tuple[Size, Timings]]) -> str:
    """One line of every size's median and p95 ratios, for a note under a table."""
    base = measured[0][1]
    parts = []
    for what, pick in (("step", _steps), ("claim", _claims)):
        for size, timing in measured[1:]:
            if pick is _claims and not _claim_matters(size, measured[0][0]):
                continue
            values, baseline = pick(timing), pick(base)
            parts.append(
                f"{what} at {size.label} {median(values) / median(baseline):.2f}x median, "
                f"{p95(values) / p95(baseline):.2f}x p95"
            )
    return "; ".join(parts) + "."


def _claim_matters(size: Size, base: Size) -> bool:
    """Whether the size grows the outbox, the only table the relay's claim reads."""
    return size is base or size.table == "sagabox_outbox_messages"


def _steps(timing: Timings) -> list[float]:
    return timing.steps


def _claims(timing: Timings) -> list[float]:
    return timing.claims


Pick = Callable[[Timings], list[float]]


def rows_for_results(measured: list[tuple[Size, Timings]]) -> list[tuple[str, float, float]]:
    """(what, median ms, baseline median ms) for each size beyond the smallest, for run.py."""
    base = measured[0][1]
    found: list[tuple[str, float, float]] = []
    picks: tuple[tuple[str, Pick], ...] = (("saga step", _steps), ("relay claim", _claims))
    for what, pick in picks:
        for size, timing in measured[1:]:
            if pick is _claims and not _claim_matters(size, measured[0][0]):
                continue
            found.append((f"{what} at {size.label}", median(pick(timing)), median(pick(base))))
    return found


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--tiny", action="store_true", help="small sizes: does it still run")
    parser.add_argument("--rounds", type=int, default=12, help="measured rounds (default 12)")
    parser.add_argument(
        "--only", help="comma-separated indexes of the sizes to measure (0, the smallest, first)"
    )
    args = parser.parse_args(argv)
    scale = 1000 if args.tiny else 1
    measured = measure(
        args.db,
        scale=scale,
        rounds=2 if args.tiny else args.rounds,
        steps=5 if args.tiny else 40,
        only=[int(index) for index in args.only.split(",")] if args.only else None,
    )
    print("\n".join(table(measured)), flush=True)


if __name__ == "__main__":
    main()
