"""A tiny run of bench (j), so `python -m bench.aio` keeps working (the numbers mean nothing),
and the check that its bare baseline writes what a saga start writes."""

from __future__ import annotations

import json

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from bench import aio
from bench.aio_server import Application
from bench.common import scratch_database
from outbox.tables import outbox_messages
from sagas import SagaRuntime
from sagas.tables import saga_instances, saga_journal


def test_a_tiny_asyncio_benchmark_run_measures_both_sides(postgres_url: str) -> None:
    with scratch_database(postgres_url) as url:
        async_rate, sync_rate, async_cpu, sync_cpu = aio.concurrent_requests(
            url, requests=20, rounds=1, warmup=5
        )
    with scratch_database(postgres_url) as url:
        measured = aio.latencies(url, transactions=5, rounds=1)
    assert {"async seam", "async bare", "sync seam", "sync bare"} == set(measured)
    assert min(async_rate, sync_rate, *(timing.wall for timing in measured.values())) > 0
    assert min(async_cpu, sync_cpu) >= 0  # a 20-request round may take less than a clock tick


# What a start writes that differs from start to start, whichever way it was written.
_PER_START = {"id", "saga_id", "correlation_id", "partition_key", "incarnation", "message_id"}
_PER_START |= {"created_at", "updated_at", "available_at", "at", "payload", "headers"}


def test_the_bare_baseline_writes_the_rows_a_start_writes(engine: Engine) -> None:
    """(j) compares the seam with bare inserts of the same rows: the same tables, the same
    columns and the same values but for each start's own keys, ids and times."""
    with Session(engine) as session, session.begin():
        SagaRuntime([Application]).start(session, Application, aio._applied("seam-1"))
        for table, row in aio._rows(aio._applied("bare-1")):
            session.execute(insert(table), row)
    with engine.connect() as connection:
        for table in (saga_instances, saga_journal, outbox_messages):
            rows = [dict(row) for row in connection.execute(select(table)).mappings()]
            seam, bare = ({k: v for k, v in r.items() if k not in _PER_START} for r in rows)
            assert (table.name, seam) == (table.name, bare)
            # The message's own fields, without the ids and times its headers carry.
            payloads = [json.loads(r["payload"]) for r in rows if "payload" in r]
            headers = [sorted(r["headers"]) for r in rows if "headers" in r]
            assert [len(p) for p in payloads[:1]] == [len(p) for p in payloads[1:]]
            assert headers[:1] == headers[1:]
