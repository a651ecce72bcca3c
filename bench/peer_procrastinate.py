"""(e) The peer: procrastinate on the same PostgreSQL, run by the bench environment's own
interpreter (procrastinate is installed there only, never in sagabox's environment).

    .bench-venv/bin/python bench/peer_procrastinate.py CONNINFO JOBS

Each job is deferred inside a business transaction (a row inserted on the same connection, as
procrastinate's `configure(connection=...)` allows); then one worker runs them all. Prints the
seconds the deferring took and the seconds the worker took, on one line.
"""

from __future__ import annotations

import sys
import time

import procrastinate  # type: ignore[import-not-found]
import psycopg


def main() -> None:
    conninfo, jobs = sys.argv[1], int(sys.argv[2])
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=conninfo))

    @app.task(queue="bench", name="bench.step")  # type: ignore[untyped-decorator]
    def step(key: str) -> None:
        """Nothing to do: the comparison is the machinery around the job."""

    with app.open():
        app.schema_manager.apply_schema()
        with psycopg.connect(conninfo, autocommit=True) as setup:
            setup.execute("CREATE TABLE peer_orders (id text PRIMARY KEY)")
        started = time.perf_counter()
        with psycopg.connect(conninfo) as connection:
            for n in range(jobs):
                with connection.transaction():
                    connection.execute("INSERT INTO peer_orders VALUES (%s)", (f"o-{n}",))
                    step.configure(connection=connection).defer(key=f"o-{n}")
    deferred = time.perf_counter()
    # The worker is async: the same app, with procrastinate's async connector.
    worker_app = app.with_connector(procrastinate.PsycopgConnector(conninfo=conninfo))
    with worker_app.open():
        worker_app.run_worker(queues=["bench"], wait=False, concurrency=1)
    print(deferred - started, time.perf_counter() - deferred)


if __name__ == "__main__":
    main()
