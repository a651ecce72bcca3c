"""Dashboard page latency on a large PostgreSQL database: saga search pages and instance pages.

    python -m bench.dashboard --db postgresql://... --sagas 1000000 --journal 10000000

Fills the saga and journal tables with generated rows in SQL (fast: no Python per row), then
requests each page shape through the ASGI app in process (so the time is the server's: query,
rendering, no network) and prints p50/p95 per shape. The goal is p95 <= 100 ms per page.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from outbox.database import make_engine
from sagabox import migrate

SAGA_TYPE = "bench.Order"

_FILL_SAGAS = text(
    """
    INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, incarnation, state, data,
        version, created_at, updated_at)
    SELECT md5('s' || g)::uuid, :saga_type, 'ORD-' || lpad(g::text, 9, '0'), md5('i' || g)::uuid,
        (ARRAY['new', 'paid', 'shipped', 'done'])[1 + g % 4], '{"total": 1}'::jsonb, 4,
        :t0 - make_interval(secs => g), :t0 - make_interval(secs => g)
    FROM generate_series(1, :n) AS g
    """
)
_FILL_JOURNAL = text(
    """
    INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, incarnation, version,
        from_state, to_state, trigger, message_id, outcome, at)
    SELECT md5('s' || s)::uuid, :saga_type, 'ORD-' || lpad(s::text, 9, '0'),
        md5('i' || s)::uuid, 1, 'new', 'paid', 'bench.Paid', md5('m' || g)::uuid, 'transition',
        :t0 - make_interval(secs => g)
    FROM generate_series(1, :lines) AS g, LATERAL (SELECT (g - 1) % :n + 1 AS s) AS pick
    """
)


def fill(engine: Engine, sagas: int, journal: int) -> None:
    t0 = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE sagabox_saga_instances, sagabox_saga_journal"))
        connection.execute(_FILL_SAGAS, {"saga_type": SAGA_TYPE, "n": sagas, "t0": t0})
        connection.execute(
            _FILL_JOURNAL, {"saga_type": SAGA_TYPE, "n": sagas, "lines": journal, "t0": t0}
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE sagabox_saga_instances, sagabox_saga_journal")
        )


def measure(engine: Engine, sagas: int, requests: int) -> dict[str, list[float]]:
    from starlette.testclient import TestClient

    from sagabox.web import create_app

    rng = random.Random(20)  # noqa: S311 - which sagas to request, not a secret

    def some_id() -> str:
        return f"ORD-{rng.randint(1, sagas):09d}"

    shapes: dict[str, Callable[[], str]] = {
        "search, first page": lambda: "/sagas",
        "search, deep keyset page": lambda: f"/sagas?after_type={SAGA_TYPE}&after_id={some_id()}",
        "search, type + state": lambda: (
            f"/sagas?type={SAGA_TYPE}&state=paid&after_type={SAGA_TYPE}&after_id={some_id()}"
        ),
        "search, id prefix": lambda: f"/sagas?id={some_id()[:-2]}",
        "instance page": lambda: f"/sagas/{SAGA_TYPE}/{some_id()}",
    }
    timings: dict[str, list[float]] = {name: [] for name in shapes}
    with TestClient(create_app(engine)) as client:
        for name, url in shapes.items():
            for round_ in range(requests + 5):
                started = time.perf_counter()
                response = client.get(url())
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, (name, response.status_code)
                if round_ >= 5:  # the first few warm the caches and the statement cache
                    timings[name].append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (its tables are emptied)")
    parser.add_argument("--sagas", type=int, default=1_000_000)
    parser.add_argument("--journal", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the rows already there")
    args = parser.parse_args()
    migrate.upgrade(args.db)
    engine = make_engine(args.db)
    try:
        if not args.reuse:
            started = time.perf_counter()
            fill(engine, args.sagas, args.journal)
            print(
                f"filled {args.sagas:,} sagas, {args.journal:,} journal lines "
                f"in {time.perf_counter() - started:.0f} s"
            )
        for name, values in measure(engine, args.sagas, args.requests).items():
            p95 = statistics.quantiles(values, n=20)[-1]
            print(f"{name:28} p50 {statistics.median(values):6.1f} ms   p95 {p95:6.1f} ms")
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
