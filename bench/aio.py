"""(j) asyncio: 1,000 concurrent requests each starting a saga, async API against the sync API in
FastAPI's thread pool on the same uvicorn server and database; and the latency the async seam
(`run_sync` plus sagabox's own work) adds over bare async inserts of the same rows.

    python -m bench.aio [--requests 1000] [--rounds 3] [--transactions 300]

Needs the PostgreSQL of `scripts/services.sh` ($SAGABOX_TEST_POSTGRES_URL); a scratch database
is created on it and dropped afterwards. Both sides are warmed up first, then take turns (call
by call, the first of them changing each round), and each side's median counts: the machine is
shared and noisy, so the ratios are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import Table, insert, null
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


def concurrent_requests(
    url: str, *, requests: int = 1000, rounds: int = 3, warmup: int = 100
) -> tuple[float, float, float, float]:
    """Median requests per second starting a saga each, `requests` at once, and the server's
    median CPU milliseconds per request: (async rate, sync rate, async CPU, sync CPU), after
    `warmup` requests to each side, in rounds that alternate which side goes first.

    The CPU figures matter on a shared machine: there a server of one busy thread (asyncio)
    gets a smaller share of the cores than one of forty (the thread pool), whatever each costs.
    """
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
    cpu: dict[str, list[float]] = {name: [] for name in SIDES}

    def side(name: str, count: int) -> Callable[[str], Awaitable[None]]:
        async def run(key: str) -> None:
            before = _cpu_seconds(server.pid)
            await _fire(base, name, count, key)
            cpu[name].append((_cpu_seconds(server.pid) - before) / count)

        return run

    try:
        _wait_until_up(base, server)
        # Opens both pools' connections and warms the statement caches (PostgreSQL prepares
        # a statement on a connection's fifth run), so no side pays for that in a round.
        asyncio.run(interleaved({n: side(n, warmup) for n in SIDES}, rounds=1, calls=1))
        for times in cpu.values():
            times.clear()
        seconds = asyncio.run(
            interleaved({n: side(n, requests) for n in SIDES}, rounds=rounds, calls=1)
        )
    finally:
        stop(server)
    async_cpu, sync_cpu = (1000 * statistics.median(cpu[name]) for name in SIDES)
    return requests / seconds["async"].wall, requests / seconds["sync"].wall, async_cpu, sync_cpu


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The two request paths of `bench.aio_server`, which is also the prefix of their URLs.
SIDES = ("async", "sync")


@dataclass(frozen=True)
class Timing:
    """Median seconds of one call: on the clock, and of this process's CPU."""

    wall: float
    cpu: float


async def interleaved(
    sides: Mapping[str, Callable[[str], Awaitable[None] | None]], *, rounds: int, calls: int
) -> dict[str, Timing]:
    """Median time of a call of each side, the sides taking turns call by call and the first
    of them changing from round to round, so a noisy minute on the shared machine falls on
    all of them alike. Each call gets a key no other call had (a fresh saga); a side may be
    async or sync (a sync one blocks the loop, which has nothing else to do)."""
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for number in range(rounds):
        prefix = f"{number}-{uuid.uuid4().hex[:6]}"
        for i in range(calls):
            for name in order:
                started, used = time.perf_counter(), time.process_time()
                done = sides[name](f"{name}-{prefix}-{i}")
                if inspect.isawaitable(done):
                    await done
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - used)
        order.reverse()
    return {
        name: Timing(statistics.median(wall[name]), statistics.median(cpu[name])) for name in sides
    }


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


async def _fire(base: str, side: str, requests: int, run: str) -> None:
    """POST `requests` at once to one side, and check that all were answered 201."""
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=900) as client:
        answers = await asyncio.gather(
            *(client.post(f"/{side}/{run}-{i}") for i in range(requests))
        )
    failed = [answer.status_code for answer in answers if answer.status_code != 201]
    if failed:
        raise RuntimeError(f"{len(failed)} of {requests} {side} requests failed: {failed[:5]}")


def seam_latency(url: str, *, transactions: int = 300, rounds: int = 3) -> tuple[float, float]:
    """Median milliseconds per transaction starting one saga: (through `AsyncSagaRuntime.start`,
    bare async inserts of the same saga, journal and outbox rows), one connection."""
    measured = latencies(url, transactions=transactions, rounds=rounds)
    return 1000 * measured["async seam"].wall, 1000 * measured["async bare"].wall


def sync_latency(url: str, *, transactions: int = 300, rounds: int = 3) -> tuple[float, float]:
    """The same on the sync side: (`SagaRuntime.start` on a `Session`, bare sync inserts of the
    same rows), one connection. Their ratio is what sagabox's own work costs without asyncio,
    so (async ratio) / (sync ratio) is what the async bridge itself adds."""
    measured = latencies(url, transactions=transactions, rounds=rounds)
    return 1000 * measured["sync seam"].wall, 1000 * measured["sync bare"].wall


def latencies(url: str, *, transactions: int = 300, rounds: int = 3) -> dict[str, Timing]:
    """One transaction starting one saga, four ways taking turns in one run, each on its own
    single connection: `async seam` (`AsyncSagaRuntime.start`), `async bare` (async inserts
    of the same rows), `sync seam` (`SagaRuntime.start`) and `sync bare`. The CPU figures
    (this process's) tell sagabox's work from the driver's."""
    return asyncio.run(_latencies(url, transactions, rounds))


async def _latencies(url: str, transactions: int, rounds: int) -> dict[str, Timing]:
    async_engine = make_async_engine(url, pool_size=1, max_overflow=0)
    sync_engine = make_engine(url, pool_size=1, max_overflow=0)
    async_runtime = AsyncSagaRuntime([Application])
    sync_runtime = SagaRuntime([Application])

    async def async_seam(key: str) -> None:
        async with AsyncSession(async_engine) as session, session.begin():
            await async_runtime.start(session, Application, _applied(key))

    async def async_bare(key: str) -> None:
        async with AsyncSession(async_engine) as session, session.begin():
            for table, row in _rows(_applied(key)):
                await session.execute(insert(table), row)

    def sync_seam(key: str) -> None:
        with Session(sync_engine) as session, session.begin():
            sync_runtime.start(session, Application, _applied(key))

    def sync_bare(key: str) -> None:
        with Session(sync_engine) as session, session.begin():
            for table, row in _rows(_applied(key)):
                session.execute(insert(table), row)

    sides: dict[str, Callable[[str], Awaitable[None] | None]] = {
        "async seam": async_seam,
        "async bare": async_bare,
        "sync seam": sync_seam,
        "sync bare": sync_bare,
    }
    try:
        # Ten calls each first: the connections, the statements' compilation, and PostgreSQL's
        # prepared statements (psycopg prepares a query on its fifth run on a connection).
        await interleaved(sides, rounds=1, calls=10)
        return await interleaved(sides, rounds=rounds, calls=transactions)
    finally:
        await async_engine.dispose()
        sync_engine.dispose()


def _applied(key: str) -> Applied:
    return Applied(loan_id=key, amount=Decimal(100))


def _rows(applied: Applied) -> list[tuple[Table, dict[str, object]]]:
    """The rows `start` writes for `applied`, made by hand: saga, journal line, outbox row
    (tests/test_bench_aio.py checks they are what `start` writes)."""
    now = clock.now()
    saga_id = Application.id_for(applied.loan_id)
    incarnation = uuid.uuid4()
    envelope = encode(
        Check(
            loan_id=applied.loan_id,
            correlation_id=applied.loan_id,
            causation_id=applied.message_id,
        )
    )
    return [
        (saga_instances, {
            "id": saga_id, "saga_type": Application.saga_type, "correlation_id": applied.loan_id,
            "incarnation": incarnation, "state": "checking", "data": {"amount": "100"},
            "version": 1, "definition_version": 1, "data_version": 1, "created_at": now,
            "updated_at": now, "finished_at": None, "timeouts": null(), "next_timeout_at": None,
        }),
        (saga_journal, {
            "saga_id": saga_id, "saga_type": Application.saga_type,
            "correlation_id": applied.loan_id, "incarnation": incarnation, "version": 1,
            "definition_version": 1, "from_state": "new",
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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent requests")
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
            async_rate, sync_rate, async_cpu, sync_cpu = concurrent_requests(
                url, requests=args.requests, rounds=args.rounds
            )
        print(f"(j) {args.requests:,} concurrent requests starting a saga each: async API "
              f"{async_rate:,.1f} req/s, sync API in the thread pool {sync_rate:,.1f} req/s, "
              f"ratio {async_rate / sync_rate:.2f} (goal ≥ 1.0); server CPU per request: "
              f"async {async_cpu:.1f} ms, sync {sync_cpu:.1f} ms, so one core would serve "
              f"{sync_cpu / max(async_cpu, 1e-9):.2f}x as many async requests")  # fmt: skip
    with scratch_database(postgres) as url:
        measured = latencies(url, transactions=args.transactions)
    wall = {name: 1000 * timing.wall for name, timing in measured.items()}
    cpu = {name: 1000 * timing.cpu for name, timing in measured.items()}
    seam = wall["async seam"] / wall["async bare"]
    sync = wall["sync seam"] / wall["sync bare"]
    print(f"(j) one saga start per transaction: async seam {wall['async seam']:.2f} ms, bare "
          f"async inserts {wall['async bare']:.2f} ms, ratio {seam:.2f} (goal ≤ 1.3)")  # fmt: skip
    print(f"(j) the same on the sync API: SagaRuntime.start {wall['sync seam']:.2f} ms, bare "
          f"inserts {wall['sync bare']:.2f} ms, ratio {sync:.2f}; what the async bridge "
          f"adds: {seam / sync:.2f}")  # fmt: skip
    print("(j) CPU per transaction, this process: "
          + ", ".join(f"{name} {value:.2f} ms" for name, value in cpu.items())
          + f"; the async driver over the sync one, bare inserts: "
          f"{cpu['async bare'] / cpu['sync bare']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
