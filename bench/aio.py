"""(j) asyncio: 1,000 concurrent requests each starting a saga, async API against the sync API in
FastAPI's thread pool on the same uvicorn server and database; and the latency the async seam
(`run_sync` plus sagabox's own work) adds over bare async inserts of the same rows.

    python -m bench.aio [--requests 1000] [--transactions 300]

Needs the PostgreSQL of `scripts/services.sh` ($SAGABOX_TEST_POSTGRES_URL); a scratch database
is created on it and dropped afterwards. Rounds alternate between the two sides, and each side's
best round counts: the machine is shared and noisy, so the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import httpx
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bench.aio_server import Application, Applied, Check, business
from bench.common import REPO, scratch_database, stop
from outbox import clock
from outbox.aio import make_async_engine
from outbox.database import make_engine
from outbox.envelope import encode
from outbox.tables import outbox_messages
from sagas import SagaRuntime
from sagas.aio import AsyncSagaRuntime
from sagas.tables import saga_instances, saga_journal


def concurrent_requests(url: str, *, requests: int = 1000, rounds: int = 2) -> tuple[float, float]:
    """Requests per second starting a saga each, `requests` at once: (async API, sync API)."""
    engine = make_engine(url)
    business.create_all(engine)
    engine.dispose()
    with socket.socket() as probe:  # a free port for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603 - uvicorn serving our own bench app
        [sys.executable, "-m", "uvicorn", "bench.aio_server:make_api", "--factory",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "BENCH_DATABASE_URL": url},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server)
        best = {"async": 0.0, "sync": 0.0}
        for number in range(rounds):
            for side in ("sync", "async"):
                rate = asyncio.run(_fire(base, side, requests, f"{number}-{uuid.uuid4().hex[:6]}"))
                best[side] = max(best[side], rate)
        return best["async"], best["sync"]
    finally:
        stop(server)


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the bench server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polls for the server's start; nothing is timed yet
    raise RuntimeError(f"the bench server did not answer within {timeout} s")


async def _fire(base: str, side: str, requests: int, run: str) -> float:
    """POST `requests` at once to one side; return requests per second, all answered 201."""
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=900) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(client.post(f"/{side}/{side}-{run}-{i}") for i in range(requests))
        )
        elapsed = time.perf_counter() - started
    failed = [answer.status_code for answer in answers if answer.status_code != 201]
    if failed:
        raise RuntimeError(f"{len(failed)} of {requests} {side} requests failed: {failed[:5]}")
    return requests / elapsed


def seam_latency(url: str, *, transactions: int = 300, rounds: int = 3) -> tuple[float, float]:
    """Median milliseconds per transaction starting one saga: (through `AsyncSagaRuntime.start`,
    bare async inserts of the same saga, journal and outbox rows), one connection."""
    return asyncio.run(_seam_latency(url, transactions, rounds))


def sync_latency(url: str, *, transactions: int = 300, rounds: int = 3) -> tuple[float, float]:
    """The same on the sync side: (`SagaRuntime.start` on a `Session`, bare sync inserts of the
    same rows), one connection. Their ratio is what sagabox's own work costs without asyncio,
    so (async ratio) / (sync ratio) is what the async bridge itself adds."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    runtime = SagaRuntime([Application])
    seam: list[float] = []
    bare: list[float] = []
    try:
        for number in range(rounds):
            prefix = f"{number}-{uuid.uuid4().hex[:6]}"
            for i in range(transactions):
                applied = Applied(loan_id=f"sync-{prefix}-{i}", amount=Decimal(100))
                started = time.perf_counter()
                with Session(engine) as session, session.begin():
                    runtime.start(session, Application, applied)
                seam.append(time.perf_counter() - started)
            for i in range(transactions):
                applied = Applied(loan_id=f"syncbare-{prefix}-{i}", amount=Decimal(100))
                started = time.perf_counter()
                with Session(engine) as session, session.begin():
                    for table, row in _rows(applied):
                        session.execute(insert(table), row)
                bare.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return 1000 * statistics.median(seam), 1000 * statistics.median(bare)


async def _seam_latency(url: str, transactions: int, rounds: int) -> tuple[float, float]:
    engine = make_async_engine(url, pool_size=1, max_overflow=0)
    runtime = AsyncSagaRuntime([Application])
    seam: list[float] = []
    bare: list[float] = []
    try:
        for number in range(rounds):
            prefix = f"{number}-{uuid.uuid4().hex[:6]}"
            for i in range(transactions):
                applied = Applied(loan_id=f"seam-{prefix}-{i}", amount=Decimal(100))
                started = time.perf_counter()
                async with AsyncSession(engine) as session, session.begin():
                    await runtime.start(session, Application, applied)
                seam.append(time.perf_counter() - started)
            for i in range(transactions):
                applied = Applied(loan_id=f"bare-{prefix}-{i}", amount=Decimal(100))
                started = time.perf_counter()
                async with AsyncSession(engine) as session, session.begin():
                    for table, row in _rows(applied):
                        await session.execute(insert(table), row)
                bare.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return 1000 * statistics.median(seam), 1000 * statistics.median(bare)


def _rows(applied: Applied) -> list[tuple[Table, dict[str, object]]]:
    """The rows `start` writes for `applied`, made by hand: saga, journal line, outbox row."""
    now = clock.now()
    saga_id = Application.id_for(applied.loan_id)
    incarnation = uuid.uuid4()
    envelope = encode(Check(loan_id=applied.loan_id, correlation_id=applied.loan_id))
    return [
        (saga_instances, {
            "id": saga_id, "saga_type": Application.saga_type, "correlation_id": applied.loan_id,
            "incarnation": incarnation, "state": "checking", "data": {"amount": "100"},
            "version": 1, "created_at": now, "updated_at": now, "finished_at": None,
            "timeouts": None,
        }),
        (saga_journal, {
            "saga_id": saga_id, "saga_type": Application.saga_type,
            "correlation_id": applied.loan_id, "incarnation": incarnation, "version": 1,
            "from_state": "new",
            "to_state": "checking", "trigger": applied.type_name,
            "message_id": applied.message_id, "outcome": "transition", "at": now,
        }),
        (outbox_messages, {
            "message_id": envelope.message_id, "type": envelope.type,
            "destination": "aiobench-credit", "partition_key": applied.loan_id,
            "payload": envelope.payload, "headers": envelope.headers, "available_at": now,
            "attempts": 0, "created_at": now,
        }),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--seam-only", action="store_true", help="skip the concurrent requests")
    args = parser.parse_args()
    postgres = os.environ.get("SAGABOX_BENCH_POSTGRES_URL") or os.environ.get(
        "SAGABOX_TEST_POSTGRES_URL"
    )
    if not postgres:
        print('start the servers first: eval "$(scripts/services.sh env)"', file=sys.stderr)
        return 2
    if not args.seam_only:
        with scratch_database(postgres) as url:
            async_rate, sync_rate = concurrent_requests(url, requests=args.requests)
        print(f"(j) {args.requests:,} concurrent requests starting a saga each: async API "
              f"{async_rate:,.0f} req/s, sync API in the thread pool {sync_rate:,.0f} req/s, "
              f"ratio {async_rate / sync_rate:.2f} (goal ≥ 1.0)")  # fmt: skip
    with scratch_database(postgres) as url:
        seam, bare = seam_latency(url, transactions=args.transactions)
    print(f"(j) one saga start per transaction: async seam {seam:.2f} ms, bare async inserts "
          f"{bare:.2f} ms, ratio {seam / bare:.2f} (goal ≤ 1.3)")  # fmt: skip
    with scratch_database(postgres) as url:
        sync_seam, sync_bare = sync_latency(url, transactions=args.transactions)
    print(f"(j) the same on the sync API: SagaRuntime.start {sync_seam:.2f} ms, bare inserts "
          f"{sync_bare:.2f} ms, ratio {sync_seam / sync_bare:.2f}; what the async bridge adds: "
          f"{(seam / bare) / (sync_seam / sync_bare):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
