"""`make bench`: every benchmark in one run, printed and saved as a markdown table.

    python -m bench.run [--tiny] [--out bench/results/FILE.md]

Needs the servers of `scripts/services.sh` (`make bench` starts them with durable commits).
`--tiny` is the few-second version the test suite runs so that the benchmarks keep working.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from pathlib import Path

from bench import (
    aio,
    growth,
    latency,
    limit,
    notify_overhead,
    peer,
    poison_cost,
    profiles,
    relay_speed,
    steps,
    workflows,
)
from bench.common import (
    REPO,
    CpuUse,
    Results,
    Sizes,
    machine_busy,
    machine_description,
    scratch_database,
    server_urls,
)

# The batched workers' `--batch-size`: the prefetch window a RabbitMQ consumer commonly uses.
BATCH = 50


def run(postgres: str, amqp: str, sizes: Sizes, results: Results) -> None:
    """Run every section, adding rows to `results`."""
    print(f"(a)/(b) saga steps: pgbench's limit and the workers, {sizes.rounds} rounds", flush=True)
    rate, batched = limit_and_steps(postgres, amqp, sizes, results)

    relay_throughput(postgres, amqp, sizes, results)

    print("(d) commit → broker latency at half of (b)", flush=True)
    cases = [(rate / 2, True, "unbatched"), (rate / 2, False, "unbatched"),
             (max(rate, batched) / 2, True, "batched")]  # fmt: skip
    for target, listen, which in cases[: sizes.latency_cases]:
        with scratch_database(postgres) as url, machine_busy() as busy:
            p50, p99, count = latency.commit_to_broker_ms(
                url, amqp, rate=target, seconds=sizes.latency_seconds, listen=listen
            )
        achieved = count / sizes.latency_seconds
        how = "LISTEN/NOTIFY" if listen else "polling every 1 s"
        goal = "p50 ≤ 5 ms, p99 ≤ 25 ms" if listen else ""
        at = f"{achieved:,.0f} msg/s (half of (b) {which}: {target:,.0f}; CPU {busy[0]:.0%} busy)"
        results.add(f"(d) p50 latency at {at}, {how}", p50, "ms", goal=goal)
        results.add(f"(d) p99 latency ({count} messages), {how}", p99, "ms", goal=goal)

    if sizes.peer_jobs:
        print("(e) the peer: procrastinate, deferring then running jobs", flush=True)
        with scratch_database(postgres, migrated=False) as url:
            theirs = peer.procrastinate_run(url, sizes.peer_jobs)
        with scratch_database(postgres) as url:
            ours = peer.sagabox_run(url, amqp, sizes.peer_jobs, batch_size=BATCH)
        jobs = f"{sizes.peer_jobs:,} jobs"
        if theirs is None:
            results.notes.append("(e) procrastinate skipped: create .bench-venv (make bench).")
        rows = [
            (f"(e) end to end, {jobs}: defer each in a business transaction, then run all",
             ours.end_to_end, theirs.end_to_end if theirs else None, "≥ 5 times"),
            ("(e) of which: deferring, one business transaction each",
             ours.defers_per_second, theirs.defers_per_second if theirs else None, ""),
            (f"(e) of which: running the backlog, 1 worker (ours: relay + batches of {BATCH})",
             ours.runs_per_second, theirs.runs_per_second if theirs else None, ""),
        ]  # fmt: skip
        for what, value, baseline, goal in rows:
            results.add(what, value, "jobs/s", baseline, "procrastinate, 1 worker", goal)

    if sizes.workflows:
        peer_workflows(postgres, amqp, sizes, results)
    else:
        results.notes.append("(m) the DBOS peer is not run at this size: `make bench` runs it.")

    if sizes.memory_rows:
        print(f"(f) relay memory, {sizes.memory_rows:,} rows", flush=True)
        with scratch_database(postgres) as url:
            warm, peak, end, seconds = relay_speed.relay_memory(url, amqp, sizes.memory_rows)
        results.add(
            f"(f) relay peak RSS draining {sizes.memory_rows:,} rows ({seconds:.0f} s)", peak,
            "MiB", warm, "RSS after 5 s", "flat (≈ 1.0)",
        )  # fmt: skip
        results.notes.append(f"(f) RSS at the end: {end:.1f} MiB.")


def relay_throughput(postgres: str, amqp: str, sizes: Sizes, results: Results) -> None:
    """(c) The relay, one process and two, against a bare kombu loop with the same confirm
    window, in alternating rounds (medians); and the relay to the in-process broker."""
    print(f"(c) relay throughput, {sizes.rounds} alternating rounds", flush=True)
    rows = sizes.relay_rows
    measured: dict[str, list[float]] = {"raw": [], "one": [], "two": [], "as relay": []}
    cpu: dict[str, CpuUse] = {}
    for _ in range(sizes.rounds):
        with scratch_database(postgres) as url:
            rate, cpu["raw"] = relay_speed.raw_publish_rate(url, amqp, rows)
            measured["raw"].append(rate)
        with scratch_database(postgres) as url:
            rate, _ = relay_speed.raw_publish_rate(url, amqp, rows, as_relay=True)
            measured["as relay"].append(rate)
        with scratch_database(postgres) as url:
            rate, cpu["one"] = relay_speed.relay_rate(url, amqp, rows)
            measured["one"].append(rate)
        with scratch_database(postgres) as url:
            measured["two"].append(relay_speed.relay_processes_rate(url, amqp, rows, processes=2))
    with scratch_database(postgres) as url:
        in_process, _ = relay_speed.relay_rate(url, "memory://", rows)
    raw, one, two, as_relay = (statistics.median(values) for values in measured.values())
    results.notes.append(
        f"(c) CPU while publishing to RabbitMQ (last round): raw loop {cpu['raw'].per(rows)}; "
        f"relay {cpu['one'].per(rows)}."
    )
    results.notes.append(
        f"(c) medians of {sizes.rounds} alternating rounds; each round: "
        + "; ".join(
            f"{name} " + ", ".join(f"{value:,.0f}" for value in values)
            for name, values in measured.items()
        )
        + " msg/s."
    )
    results.add(
        f"(c) relay → RabbitMQ, {rows:,} rows", one, "msg/s",
        raw, "raw kombu loop, same confirm window", "≥ 0.90",
    )  # fmt: skip
    results.add(
        f"(c) relay → RabbitMQ, {rows:,} rows: what the database costs it", one, "msg/s",
        as_relay, "the raw loop sending as the relay does (its frames, coalesced writes)",
    )  # fmt: skip
    results.add(f"(c) relay → in-process broker, {rows:,} rows", in_process, "msg/s")
    results.add(
        f"(c) 2 relay processes → RabbitMQ, {rows:,} rows", two, "msg/s",
        raw, "raw kombu loop, same confirm window", "≥ 0.90",
    )  # fmt: skip


def peer_workflows(postgres: str, amqp: str, sizes: Sizes, results: Results) -> None:
    """(m) N three-step workflows through DBOS and N three-step sagas through sagabox (unbatched
    and batched workers), in alternating rounds on the same server; medians of each figure."""
    n, in_flight = sizes.workflows, sizes.in_flight
    print(f"(m) the peer: DBOS, {n:,} workflows of 3 steps, {in_flight} in flight", flush=True)
    measured: dict[str, list[workflows.ChainRun]] = {"dbos": [], "unbatched": [], "batched": []}
    for _ in range(sizes.rounds):
        with scratch_database(postgres) as url:
            theirs = workflows.dbos_run(url, n, in_flight=in_flight)
        if theirs is not None:
            measured["dbos"].append(theirs)
        for which, batch_size in (("unbatched", 1), ("batched", BATCH)):
            with scratch_database(postgres) as url:
                measured[which].append(
                    workflows.sagabox_run(url, amqp, n, in_flight=in_flight, batch_size=batch_size)
                )
    if not measured["dbos"]:
        results.notes.append("(m) DBOS skipped: create .bench-venv (make bench).")

    def median(which: str, figure: str) -> float | None:
        runs = measured[which]
        return statistics.median(getattr(run, figure) for run in runs) if runs else None

    peer_name = f"DBOS, {workflows.PROCESSES} processes"
    modes = (("unbatched", "one step per transaction"), ("batched", f"batches of {BATCH}"))
    for which, how in modes:
        ours = f"{workflows.PROCESSES} workers + relay, {how}"
        steps_per_second = median(which, "steps_per_second")
        assert steps_per_second is not None
        results.add(
            f"(m) 3-step workflows, {in_flight} in flight, steps/s: sagabox ({ours})",
            steps_per_second, "steps/s", median("dbos", "steps_per_second"), peer_name, "> 1",
        )  # fmt: skip
        for figure in ("p50_ms", "p99_ms"):
            value = median(which, figure)
            assert value is not None
            results.add(
                f"(m) time to complete one, {figure[:3]}: sagabox ({how})", value, "ms",
                median("dbos", figure), peer_name,
            )  # fmt: skip
    results.notes.append(
        f"(m) {n:,} workflows per side per round, {sizes.rounds} rounds, medians; each round "
        + "; ".join(
            f"{which} " + ", ".join(f"{run.steps_per_second:,.0f}" for run in runs)
            for which, runs in measured.items()
        )
        + " steps/s."
    )


def limit_and_steps(
    postgres: str, amqp: str, sizes: Sizes, results: Results
) -> tuple[float, float]:
    """(a) pgbench's saga steps, one per transaction and `BATCH` per transaction, and (b) the
    workers' unbatched and batched, in alternating rounds; each mode against its own limit.
    Returns the workers' medians (unbatched, batched)."""
    measured: dict[str, list[float]] = {"one": [], "many": [], "unbatched": [], "batched": []}
    for _ in range(sizes.rounds):
        for steps_per_transaction in (1, BATCH):
            with scratch_database(postgres) as url:
                limit.seed(url)
                measured["one" if steps_per_transaction == 1 else "many"].append(
                    limit.steps_per_second(
                        url, steps=steps_per_transaction, seconds=sizes.pgbench_seconds
                    )
                )
            with scratch_database(postgres) as url:
                measured["unbatched" if steps_per_transaction == 1 else "batched"].append(
                    steps.saga_steps_per_second(
                        url, amqp, workers=sizes.workers, messages=sizes.saga_messages,
                        batch_size=steps_per_transaction,
                    )
                )  # fmt: skip
    one, many, rate, batched = (statistics.median(measured[k]) for k in measured)
    clients = f"{limit.CLIENTS} clients, -M prepared"
    results.add(f"(a) pgbench saga-step SQL, 1 step per transaction, {clients}", one, "steps/s")
    results.add(
        f"(a) pgbench saga-step SQL, {BATCH} steps per transaction, {clients}", many, "steps/s"
    )
    results.add(
        f"(b) saga steps, {sizes.workers} workers, one step per transaction", rate, "steps/s",
        one, "(a) 1 step per transaction", "≥ 0.50",
    )  # fmt: skip
    results.add(
        f"(b) saga steps, {sizes.workers} workers, batches of up to {BATCH}", batched,
        "steps/s", many, f"(a) {BATCH} steps per transaction", "≥ 0.60",
    )  # fmt: skip
    results.notes.append(
        f"(a)/(b) medians of {sizes.rounds} alternating rounds; each round: "
        + "; ".join(
            f"{name} " + ", ".join(f"{value:,.0f}" for value in values)
            for name, values in measured.items()
        )
        + " steps/s."
    )
    return rate, batched


def notify_cost(postgres: str, results: Results) -> None:
    """(h) What the outbox's NOTIFY trigger costs the business transactions that write."""
    print("(h) the NOTIFY trigger's cost", flush=True)
    # Seven alternating rounds, medians: runs of three read anywhere from 0.86 to 1.02 here.
    on, off, _ = notify_overhead.measure(postgres, threads=4, steps=300, rounds=7)
    results.add(
        "(h) saga steps writing an outbox row, 4 threads, with the NOTIFY trigger", on,
        "steps/s", off, "the same with the trigger disabled (7 alternating rounds)",
        "below 0.95: say so (`sagabox db notify off`)",
    )  # fmt: skip


def poison(postgres: str, amqp: str, messages: int, results: Results, *, every: int = 1000) -> None:
    """(i) A poison message's cost to its neighbours: good messages' p99 handling time with
    one poison message per `every` (1,000), against none."""
    print("(i) poison messages' cost to their neighbours", flush=True)
    for batch_size in (1, BATCH):
        p99 = {}
        for poison_every in (None, every):
            with scratch_database(postgres) as url:
                p99[poison_every], _ = poison_cost.good_p99_ms(
                    url, amqp, messages=messages, poison_every=poison_every, batch_size=batch_size
                )
        how = "one per transaction" if batch_size == 1 else f"batches of up to {BATCH}"
        results.add(
            f"(i) good messages' p99 handling time, 1 poison per {every:,}, {how}", p99[every],
            "ms", p99[None], "no poison", "≤ 1.5",
        )  # fmt: skip


def asyncio_comparison(postgres: str, results: Results) -> None:
    """(j) The async API against the sync one in a thread pool, and the async seam's cost."""
    print("(j) asyncio: 1,000 concurrent requests, and the seam's latency", flush=True)
    with scratch_database(postgres) as url:
        async_rate, sync_rate, async_cpu, sync_cpu = aio.concurrent_requests(url, requests=1000)
    results.add(
        "(j) 1,000 concurrent requests starting a saga each, async API (FastAPI, psycopg async)",
        async_rate, "req/s", sync_rate, "sync API in FastAPI's thread pool", "≥ 1.0",
    )  # fmt: skip
    results.add(
        "(j) the server's CPU per request there, async API", async_cpu, "ms", sync_cpu,
        "sync API in the thread pool",
    )  # fmt: skip
    with scratch_database(postgres) as url:
        measured = aio.latencies(url)
    wall = {name: 1000 * timing.wall for name, timing in measured.items()}
    results.add(
        "(j) one saga start per transaction through the async seam", wall["async seam"], "ms",
        wall["async bare"], "bare async inserts of the same rows", "≤ 1.3",
    )  # fmt: skip
    results.add(
        "(j) the same through the sync API (`SagaRuntime.start` on a Session)",
        wall["sync seam"], "ms", wall["sync bare"], "bare sync inserts of the same rows",
    )  # fmt: skip


def growth_costs(postgres: str, results: Results) -> None:
    """(k) A saga step's and the relay's claim cost as the tables grow, each size against the
    smallest, measured in interleaved rounds (medians here, p95s in the notes)."""
    print("(k) cost as the tables grow (filling takes a while)", flush=True)
    measured = growth.measure(postgres)
    for what, value, baseline in growth.rows_for_results(measured):
        results.add(f"(k) {what}", value, "ms", baseline, "the smallest size", "≤ 1.2")
    results.notes.append("(k) medians and p95s: " + growth.summary(measured))


def profile(postgres: str, amqp: str, sizes: Sizes, results: Results) -> None:
    """(g) py-spy profiles of the hot paths, as notes under the table."""
    print("(g) profiles (py-spy)", flush=True)
    found: list[tuple[str, list[tuple[str, float]] | None]] = []
    for batch_size in (1, BATCH):
        with scratch_database(postgres) as url:
            top = profiles.profile_worker(
                url, amqp, batch_size=batch_size, messages=sizes.saga_messages
            )
        how = "one step per transaction" if batch_size == 1 else f"batches of {BATCH}"
        found.append((f"one worker, {how}; samples by innermost sagabox function", top))
    with scratch_database(postgres) as url:
        top = profiles.profile_relay(url, amqp, sizes.relay_rows // 2)
    found.append(("`sagabox relay --once` to RabbitMQ; samples by innermost sagabox function", top))
    for title, top in found:
        if top is None:
            results.notes.append("(g) profiles skipped: py-spy is installed by `make bench`.")
            return
        results.notes.append(profiles.describe(title, top))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="seconds, for the test suite")
    parser.add_argument("--out", type=Path, help="where to save the table")
    args = parser.parse_args()
    servers = server_urls()
    if servers is None:
        return 2
    postgres, amqp = servers
    sizes = Sizes.tiny() if args.tiny else Sizes.full()
    results = Results()
    run(postgres, amqp, sizes, results)
    if not args.tiny:
        notify_cost(postgres, results)
        poison(postgres, amqp, sizes.saga_messages, results)
        asyncio_comparison(postgres, results)
        growth_costs(postgres, results)
        profile(postgres, amqp, sizes, results)
    table = results.markdown(machine_description(postgres))
    print("\n" + table)
    today = dt.datetime.now(dt.UTC).date()
    out = args.out or (None if args.tiny else REPO / "bench" / "results" / f"{today}.md")
    if out is not None:
        out.write_text(table)
        print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
