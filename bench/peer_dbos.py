"""(m) The peer: DBOS workflows of three durable steps on the same PostgreSQL, run by the bench
environment's own interpreter (DBOS is installed there only, never in sagabox's environment).

    .bench-venv/bin/python bench/peer_dbos.py CONNINFO EXECUTOR FIRST COUNT IN_FLIGHT

Launches DBOS (its system tables in the `dbos` schema of the same database), prints `ready`,
waits for a line on stdin, then starts workflows `c-FIRST` .. with `DBOS.start_workflow`, keeping
IN_FLIGHT of them running, until all have finished. Each step is a `@db.transaction` (the
business-row update and DBOS's checkpoint of it commit together: exactly once, as sagabox's
inbox makes a saga step); the workflow's start and end are stamped on its business row.
"""

from __future__ import annotations

import sys
import time

import sqlalchemy as sa
from dbos import (  # type: ignore[import-not-found]
    DBOS,
    DBOSConfig,
    SetWorkflowID,
    SQLAlchemyDatasource,
)

# The repository is on the path (PYTHONPATH): this module imports nothing else of it.
from bench.closed_loop import keep_in_flight

ADVANCE_ROW = sa.text(
    "UPDATE bench_chain SET steps = steps + 1, "
    "started_at = CASE WHEN :last THEN to_timestamp(:started) END, "
    "done_at = CASE WHEN :last THEN clock_timestamp() END WHERE id = :id"
)
FINISHED_IN = sa.text(
    "SELECT count(*) FROM bench_chain WHERE done_at IS NOT NULL "
    "AND substr(id, 3)::integer BETWEEN :first AND :last"
)


def main() -> None:
    conninfo, executor = sys.argv[1], sys.argv[2]
    first, count, in_flight = map(int, sys.argv[3:6])
    url = conninfo.replace("postgresql://", "postgresql+psycopg://", 1)
    # DBOS's own defaults otherwise: a system pool of 20, an unbounded executor thread pool,
    # LISTEN/NOTIFY for its notifications, SERIALIZABLE transactions.
    config: DBOSConfig = {
        "name": "sagabox-bench",
        "system_database_url": url,
        "executor_id": executor,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    db = SQLAlchemyDatasource.create(url)

    @db.transaction  # type: ignore[untyped-decorator]
    def advance(key: str, last: bool, started: float) -> None:
        db.sql_session().execute(ADVANCE_ROW, {"id": key, "last": last, "started": started})

    @DBOS.workflow()  # type: ignore[untyped-decorator]
    def chain(key: str, started: float) -> None:
        advance(key, False, started)
        advance(key, False, started)
        advance(key, True, started)

    DBOS.launch()
    probe = sa.create_engine(url, pool_size=1)
    print("ready", flush=True)
    sys.stdin.readline()

    handles = []

    def start(n: int) -> None:
        with SetWorkflowID(f"c-{n}"):  # the workflow's key, as a saga's is its correlation
            handles.append(DBOS.start_workflow(chain, f"c-{n}", time.time()))

    def finished() -> int:
        with probe.connect() as connection:
            found = connection.execute(FINISHED_IN, {"first": first, "last": first + count - 1})
            return int(found.scalar_one())

    keep_in_flight(start, finished, first=first, count=count, in_flight=in_flight)
    for handle in handles:  # each records its outcome after its last step: wait for that
        handle.get_result()
    probe.dispose()
    DBOS.destroy()


if __name__ == "__main__":
    main()
