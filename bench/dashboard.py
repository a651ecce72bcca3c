"""Dashboard page latency on a large PostgreSQL database: every page issue 20 names, p50/p95.

    python -m bench.dashboard --db postgresql://... --sagas 1000000 --journal 10000000

Fills the tables with generated rows in SQL (`INSERT ... SELECT generate_series`, no Python per
row; the indexes are dropped first and rebuilt after, which is several times faster): four saga
types, two of them registered (so their instance pages draw the diagram), 80% finished, 19% live
with a pending timeout or a recent step, 1% stuck, created over 90 days; ten journal lines per
saga; the pending timeouts' outbox rows, a due backlog and dead letters in groups. Then it asks
for each page shape through the ASGI app in process (the time is the server's: queries and
rendering, no network), the shapes interleaved round by round so the machine's noise spreads over
all of them, and prints p50/p95 per shape next to a floor measured in the same rounds: the page
of a saga that does not exist (one index probe and a template).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from outbox.database import make_engine
from outbox.tables import metadata
from sagabox import migrate

#: (saga type, correlation id prefix, final states, live states); a saga's type is picked by
#: `g % 20` (8, 4, 5 and 3 of 20), its state by a hash of `g`.
TYPES = [
    ("orders.Order", "ORD-", ("completed", "cancelled"), ("charging", "reserving", "refunding")),
    ("loans.LoanApplication", "LOAN-", ("approved", "denied"), ("checking", "in_review")),
    ("billing.Invoice", "INV-", ("paid", "void"), ("open", "dunning")),
    ("shipping.Shipment", "SHP-", ("delivered", "lost"), ("packing", "in_transit")),
]
_BUCKETS = [0] * 8 + [1] * 4 + [2] * 5 + [3] * 3
FILLED = {
    "sagabox_saga_instances",
    "sagabox_saga_journal",
    "sagabox_outbox_messages",
    "sagabox_dead_letters",
}


def _case(g: str, pick: Callable[[int], str]) -> str:
    """A SQL CASE choosing per saga type (by `g % 20`) the literal `pick(type index)`."""
    arms = " ".join(f"WHEN {i} THEN {pick(i)}" for i in range(len(TYPES)))
    return f"(CASE (ARRAY{_BUCKETS})[1 + {g} % 20] {arms} END)"


def _array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


def _type(g: str) -> str:
    return _case(g, lambda i: f"'{TYPES[i][0]}'")


def _id(g: str) -> str:
    return _case(g, lambda i: f"'{TYPES[i][1]}'") + f" || lpad({g}::text, 9, '0')"


def _live(g: str) -> str:
    return _case(g, lambda i: _array(TYPES[i][3]))


_FINAL = _case("g", lambda i: _array(TYPES[i][2]))

# r: the state bucket; age: created 0..90 days before t0, the higher g the older.
_SAGAS = f"""
INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, incarnation, state, data,
    version, created_at, updated_at, finished_at, timeouts, next_timeout_at)
SELECT md5('s' || g)::uuid, {_type("g")}, {_id("g")}, md5('i' || g)::uuid,
    CASE WHEN r < 80 THEN ({_FINAL})[1 + (r % 10) / 9] ELSE ({_live("g")})[1 + g % 2] END,
    jsonb_build_object('customer', 'c' || (g % 5000), 'amount', g % 1000), 4 + g % 7,
    created,
    CASE WHEN r < 80 THEN created + make_interval(secs => g % 600)
         WHEN r < 99 THEN greatest(created, :t0 - make_interval(secs => g % 3000))
         ELSE created END,
    CASE WHEN r < 80 THEN created + make_interval(secs => g % 600) END,
    CASE WHEN r >= 80 AND r < 95 THEN jsonb_build_object('reminder', jsonb_build_object(
        'message_id', md5('t' || g)::uuid::text, 'state', ({_live("g")})[1 + g % 2],
        'due_at', to_char((:t0 + make_interval(secs => g % 86400)) AT TIME ZONE 'UTC',
                          'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
        'outlive_state', false, 'every', NULL, 'remaining', 1)) END,
    CASE WHEN r >= 80 AND r < 95 THEN :t0 + make_interval(secs => g % 86400) END
FROM generate_series(1, :n) AS g,
    LATERAL (SELECT (hashint8(g::bigint)::bigint % 100 + 100) % 100 AS r,
                    :t0 - make_interval(secs => (g::float8 / :n * 90 * 86400)) AS created) AS x
"""  # noqa: S608 - built from the constants above, no input
# Ten lines per saga (line k of saga s is row g = k * n + s), a minute apart.
_JOURNAL = f"""
INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, incarnation, version,
    definition_version, from_state, to_state, trigger, message_id, outcome, at)
SELECT md5('s' || s)::uuid, {_type("s")}, {_id("s")}, md5('i' || s)::uuid, k + 1, 1,
    CASE WHEN k = 0 THEN 'new' ELSE ({_live("s")})[1] END, ({_live("s")})[1 + k % 2],
    'bench.Step', md5('m' || g)::uuid,
    'transition', :t0 - make_interval(secs => (s::float8 / :n * 90 * 86400)) + k * interval '1 min'
FROM generate_series(1, :lines) AS g,
    LATERAL (SELECT (g - 1) % :n + 1 AS s, (g - 1) / :n AS k) AS x
"""  # noqa: S608 - built from the constants above, no input
_OUTBOX = """
INSERT INTO sagabox_outbox_messages (message_id, type, destination, partition_key, payload,
    headers, available_at, attempts, created_at)
SELECT (timeouts -> 'reminder' ->> 'message_id')::uuid, 'bench.Reminder', 'sagas',
    correlation_id, '{}', '{}'::jsonb, next_timeout_at, 0, updated_at
FROM sagabox_saga_instances WHERE next_timeout_at IS NOT NULL
UNION ALL
SELECT md5('b' || g)::uuid, 'bench.Command', 'payments', 'ORD-' || lpad(g::text, 9, '0'), '{}',
    '{}'::jsonb, :t0 - make_interval(secs => g), 0, :t0 - make_interval(secs => g)
FROM generate_series(1, :backlog) AS g
"""
_DEAD = """
INSERT INTO sagabox_dead_letters (endpoint, message_id, type, headers, body, reason, error,
    attempts, first_failed_at, last_failed_at)
SELECT (ARRAY['payments', 'inventory', 'loans'])[1 + g % 3], md5('d' || g)::uuid,
    (ARRAY['bench.Charge', 'bench.Reserve'])[1 + g % 2], '{}'::jsonb,
    convert_to('{"order_id": "ORD-' || g || '"}', 'UTF8'),
    (ARRAY['handler failed', 'bad input', 'unknown type', 'no saga', 'timeout'])[1 + g % 5],
    'ValueError: bench', 5, :t0 - make_interval(secs => g * 60), :t0 - make_interval(secs => g)
FROM generate_series(1, :dead) AS g
"""


def fill(
    engine: Engine, sagas: int, journal: int, *, backlog: int = 1000, dead: int = 5000
) -> None:
    """Empty the dashboard's tables and fill them; the indexes are rebuilt after the rows."""
    t0 = datetime.now(UTC)
    params = {"n": sagas, "lines": journal, "t0": t0, "backlog": backlog, "dead": dead}
    indexes = [i for t in metadata.sorted_tables if t.name in FILLED for i in t.indexes]
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        connection.exec_driver_sql("SET LOCAL maintenance_work_mem TO '256MB'")
        connection.execute(text("TRUNCATE " + ", ".join(sorted(FILLED))))
        for index in indexes:
            index.drop(connection)
        for statement in (_SAGAS, _JOURNAL, _OUTBOX, _DEAD):
            started = time.perf_counter()
            connection.execute(text(statement), params)
            print(f"  {statement.split()[2]}: {time.perf_counter() - started:.0f} s", flush=True)
        for index in indexes:
            index.create(connection)
    vacuum(engine)


def vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE the filled tables: statistics, and the visibility map for index-only scans
    (autovacuum does the same on a live database)."""
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in sorted(FILLED):
            autocommit.exec_driver_sql(f"VACUUM ANALYZE {table}")


def saga_id(g: int) -> tuple[str, str]:
    """The (type, correlation id) the fill gave saga number `g`."""
    saga_type, prefix, _, _ = TYPES[_BUCKETS[g % 20]]
    return saga_type, f"{prefix}{g:09d}"


def shapes(sagas: int, rng: random.Random) -> dict[str, Callable[[], str]]:
    """Page name -> a function giving the next URL to ask for that page."""

    def some(bucket: int | None = None) -> tuple[str, str]:
        while True:
            g = rng.randint(1, sagas)
            if bucket is None or _BUCKETS[g % 20] == bucket:
                return saga_id(g)

    def after(bucket: int | None = None) -> str:
        saga_type, correlation_id = some(bucket)
        return f"after_type={saga_type}&after_id={correlation_id}"

    order = TYPES[0][0]
    return {
        "floor: missing instance": lambda: "/sagas/orders.Order/NOPE-1",
        "overview": lambda: "/",
        "overview, live part": lambda: "/live/overview",
        "search, first page": lambda: "/sagas",
        "search, deep page": lambda: f"/sagas?{after()}",
        "type, first page": lambda: f"/sagas?type={order}",
        "type, deep page": lambda: f"/sagas?type={order}&{after(0)}",
        "type + state, first": lambda: f"/sagas?type={order}&state=charging",
        "type + state, deep": lambda: f"/sagas?type={order}&state=charging&{after(0)}",
        "state, first page": lambda: "/sagas?state=in_review",
        "state, deep page": lambda: f"/sagas?state=in_review&{after(1)}",
        "id prefix, narrow": lambda: f"/sagas?id={some(0)[1][:-2]}",
        "id prefix, wide": lambda: "/sagas?id=ORD-00",
        "id prefix, wide deep": lambda: f"/sagas?id=ORD-00&{after(0)}",
        "age > 30 d, first": lambda: "/sagas?older_than_minutes=43200",
        "age > 30 d, deep": lambda: f"/sagas?older_than_minutes=43200&{after()}",
        "stuck, first page": lambda: "/sagas?stuck=1",
        "stuck, deep page": lambda: f"/sagas?stuck=1&{after()}",
        "instance (diagram)": lambda: "/sagas/{}/{}".format(*some(rng.choice([0, 1]))),
        "instance (no diagram)": lambda: "/sagas/{}/{}".format(*some(rng.choice([2, 3]))),
        "dead letters": lambda: "/dead-letters",
    }


def measure(engine: Engine, sagas: int, rounds: int) -> dict[str, list[float]]:
    """`rounds` requests per page shape, interleaved; milliseconds per request."""
    from starlette.testclient import TestClient

    from examples.loan_request.apps import apps as loan_apps
    from examples.order.apps import apps as order_apps
    from sagabox.web import create_app

    rng = random.Random(20)  # noqa: S311 - which sagas to ask for, not a secret
    pages = shapes(sagas, rng)
    timings: dict[str, list[float]] = {name: [] for name in pages}
    app = create_app(engine, apps=[*order_apps()[:1], *loan_apps()[:1]])
    with TestClient(app) as client:
        for round_ in range(rounds + 3):
            for name, url in pages.items():
                started = time.perf_counter()
                response = client.get(url())
                elapsed = (time.perf_counter() - started) * 1000
                expected = 404 if name.startswith("floor") else 200
                assert expected == response.status_code, (name, response.status_code)
                if round_ >= 3:  # the first rounds warm the caches and the statement cache
                    timings[name].append(elapsed)
    return timings


def report(timings: dict[str, list[float]], header: str) -> str:
    """A markdown table: p50, p95 and the p95's ratio to the floor's p95, per page."""

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1]

    floor = p95(timings["floor: missing instance"])
    lines = [
        header,
        "",
        "| page | p50 ms | p95 ms | p95 / floor p95 | goal p95 <= 100 ms |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, values in timings.items():
        high = p95(values)
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {high:.1f} | {high / floor:.1f} | "
            f"{'met' if high <= 100 else 'NOT met'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (its tables are emptied)")
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--journal", type=int, default=10_000_000)
    parser.add_argument(
        "--dead", type=int, default=100_000, help="dead letters, in 30 groups (issue 20: 100k+)"
    )
    parser.add_argument("--rounds", type=int, default=100, help="requests per page shape")
    parser.add_argument("--reuse", action="store_true", help="keep the rows already there")
    parser.add_argument("--out", type=Path, help="also append the table to this markdown file")
    args = parser.parse_args()
    migrate.upgrade(args.db)
    engine = make_engine(args.db)
    try:
        if args.reuse:
            vacuum(engine)
        else:
            started = time.perf_counter()
            fill(engine, args.sagas, args.journal, dead=args.dead)
            print(
                f"filled {args.sagas:,} sagas, {args.journal:,} journal lines "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        with engine.connect() as connection:
            counted = connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM sagabox_saga_instances), "
                    "(SELECT count(*) FROM sagabox_saga_journal)"
                )
            ).one()
        header = (
            f"### Dashboard pages, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {counted[0]:,} saga "
            f"instances, {counted[1]:,} journal lines, PostgreSQL, {args.rounds} requests "
            "per page, in process"
        )
        table = report(measure(engine, args.sagas, args.rounds), header)
        print(table)
        if args.out is not None:
            with args.out.open("a", encoding="utf-8") as out:
                out.write(table + "\n\n")
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
