"""What every benchmark section shares: scratch databases, the servers' URLs, the results table.

Every figure is reported next to a baseline measured in the same run on the same machine, and
as their ratio: these machines are shared and noisy, so only ratios compare across runs.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.pool import NullPool

from outbox.database import make_engine
from outbox.tables import inbox_messages
from sagabox.testing import scratch_database

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "PY_SPY",
    "REPO",
    "CpuUse",
    "Results",
    "Sizes",
    "cpu_seconds",
    "load_average",
    "machine_busy",
    "machine_description",
    "measuring_cpu",
    "sagabox_process",
    "scratch_database",
    "server_cpu_seconds",
    "server_urls",
    "stop",
    "wait_for_inbox",
]


def server_urls() -> tuple[str, str] | None:
    """The PostgreSQL and RabbitMQ URLs of `scripts/services.sh` from the environment; None,
    having said how to start them, when they are not there."""
    postgres = os.environ.get("SAGABOX_TEST_POSTGRES_URL")
    amqp = os.environ.get("SAGABOX_TEST_AMQP_URL")
    if not postgres or not amqp:
        print('start the servers first: eval "$(scripts/services.sh env)"', file=sys.stderr)
        return None
    return postgres, amqp


@dataclass(frozen=True)
class Sizes:
    """How much work each section does: `full()` for the report, `tiny()` for the test suite."""

    pgbench_seconds: int
    workers: int
    saga_messages: int
    relay_rows: int
    latency_seconds: float
    peer_jobs: int
    memory_rows: int
    #: Alternating rounds of (a) and (b), whose medians the table reports.
    rounds: int = 3
    #: How many of (d)'s three cases to run: each costs its processes' start-up, many seconds
    #: that tell nothing in the suite's tiny run.
    latency_cases: int = 3
    #: (m): three-step workflows per side per round (0 skips the section, with a note), and
    #: how many are in flight at once on each side.
    workflows: int = 0
    in_flight: int = 16

    @classmethod
    def full(cls) -> Sizes:
        return cls(10, 2, 5000, 100_000, 10.0, 5000, 1_000_000, workflows=2000)

    @classmethod
    def tiny(cls) -> Sizes:
        # No (m) here: DBOS's launch and sagabox's three processes per side cost tens of
        # seconds at any size; tests/test_bench_workflows.py runs sagabox's side on its own.
        return cls(1, 2, 100, 500, 0.5, 20, 0, rounds=1, latency_cases=1)


@dataclass
class Results:
    """Rows of the markdown table: what, measured, baseline, ratio, goal."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, value: float, unit: str, baseline: float | None = None,
            baseline_name: str = "", goal: str = "") -> None:  # fmt: skip
        measured = f"{value:,.1f} {unit}"
        base = f"{baseline:,.1f} {unit} ({baseline_name})" if baseline is not None else ""
        ratio = f"{value / baseline:.2f}" if baseline else ""
        self.rows.append((what, measured, base, ratio, goal))
        print(f"  {what}: {measured}" + (f" vs {base} = {ratio}" if base else ""), flush=True)

    def markdown(self, machine: str) -> str:
        lines = [
            "# sagabox benchmarks",
            "",
            machine,
            "",
            "| what | measured | baseline (same run) | ratio | goal |",
            "| --- | ---: | ---: | ---: | --- |",
            *(f"| {' | '.join(row)} |" for row in self.rows),
        ]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


PY_SPY = REPO / ".bench-venv" / "bin" / "py-spy"


def wait_for_inbox(engine: Engine, messages: int, *, every: float) -> None:
    """Return once the inbox holds `messages` rows: the workers have handled them all."""
    count = select(func.count()).select_from(inbox_messages)
    while True:
        with engine.connect() as connection:
            if connection.execute(count).scalar_one() >= messages:
                return
        time.sleep(every)  # polls for the end; a run's end time is when it is seen


def sagabox_process(
    *arguments: str,
    environment: Mapping[str, str] | None = None,
    quiet: bool = False,
    profile_to: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`sagabox ARGUMENTS` (a relay or a worker) as its own process, able to import `bench`;
    sampled by py-spy into `profile_to` (raw collapsed stacks) when that is given."""
    command = [sys.executable, "-m", "sagabox.cli", *arguments]
    if profile_to is not None:
        command = [str(PY_SPY), "record", "--rate", "200", "--format", "raw", "--output",
                   str(profile_to), "--", *command]  # fmt: skip
    return subprocess.Popen(  # noqa: S603 - our own program, with arguments from this package
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(environment or {})},
        stdout=subprocess.DEVNULL if quiet or profile_to else None,
        stderr=subprocess.DEVNULL if profile_to else None,
    )


def stop(*processes: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Stop every process still running, then wait for each: they finish what is in flight.

    SIGTERM for ours; SIGINT for py-spy, which then writes its profile and passes the signal
    on to the process it samples.
    """
    for process in processes:
        if process.poll() is None:
            profiled = isinstance(process.args, list) and process.args[0] == str(PY_SPY)
            process.send_signal(signal.SIGINT if profiled else signal.SIGTERM)
    for process in processes:
        process.wait(timeout=timeout)


def cpu_seconds(*commands: str) -> float:
    """CPU seconds (user + system) used so far by the running processes named `commands`
    (as in /proc/PID/comm), every such process on the machine: see `server_cpu_seconds`."""
    total = 0.0
    for fields in _processes():
        if fields[0] in commands:
            total += _ticks(fields, 12, 13)
    return total / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(server: str) -> float:
    """CPU seconds used so far by `scripts/services.sh`'s PostgreSQL (`"postgres"`, the
    postmaster and its backends, the ended ones included) or RabbitMQ (`"beam.smp"`).

    Summing every process of that name counted other clusters on a shared machine, and lost
    the CPU of backends that ended during the section (it read below zero). The server's own
    process counts what its reaped children used, so the total only grows. Without the
    services' folder (servers started some other way) it falls back to `cpu_seconds`.
    """
    pid = _server_pid(server)
    if pid is None:
        return cpu_seconds(server)
    total = 0.0
    for fields in _processes():
        if fields[-1] == pid:
            total += _ticks(fields, 12, 13, 14, 15)  # with its reaped children's
        elif fields[2] == str(pid):
            total += _ticks(fields, 12, 13)  # a running child: a backend
    return total / os.sysconf("SC_CLK_TCK")


def _server_pid(server: str) -> int | None:
    folder = os.environ.get("SAGABOX_SERVICES_DIR")
    files = {"postgres": "postgres/data/postmaster.pid", "beam.smp": "rabbitmq/rabbitmq.pid"}
    if not folder or server not in files:
        return None
    try:
        return int(Path(folder, files[server]).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _processes() -> Iterator[list[Any]]:
    """Each process's stat fields: its name, then the fields after it (state, ppid, ...), and
    its pid last."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        yield [name, *text[text.rindex(")") + 2 :].split(), int(stat.parent.name)]


def _ticks(fields: list[Any], *positions: int) -> int:
    return sum(int(fields[n]) for n in positions)


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, for a round's line."""
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


@contextmanager
def machine_busy() -> Iterator[list[float]]:
    """Yield a list that receives, after the block, the share of the machine's CPU time (all
    cores) that was busy during it, from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return sum(fields) - idle, sum(fields)

    share: list[float] = []
    busy, total = sample()
    yield share
    busy_after, total_after = sample()
    share.append((busy_after - busy) / max(total_after - total, 1))


@dataclass
class CpuUse:
    """CPU seconds spent during a timed section: this Python process, RabbitMQ, PostgreSQL."""

    python: float = 0.0
    rabbitmq: float = 0.0
    postgresql: float = 0.0

    def per(self, messages: int, unit: int = 10_000) -> str:
        scale = unit / messages
        return (
            f"Python {self.python * scale:.2f} s, RabbitMQ {self.rabbitmq * scale:.2f} s, "
            f"PostgreSQL {self.postgresql * scale:.2f} s per {unit:,} messages"
        )


@contextmanager
def measuring_cpu() -> Iterator[CpuUse]:
    """Fill a `CpuUse` with what the block cost each side (servers measured from /proc)."""
    use = CpuUse()
    before = (time.process_time(), server_cpu_seconds("beam.smp"), server_cpu_seconds("postgres"))
    yield use
    use.python = time.process_time() - before[0]
    use.rabbitmq = server_cpu_seconds("beam.smp") - before[1]
    use.postgresql = server_cpu_seconds("postgres") - before[2]


def machine_description(server: str) -> str:
    """CPU, memory, Python and server versions, and whether commits were durable."""
    engine = make_engine(server, poolclass=NullPool)
    with engine.connect() as connection:
        version = connection.execute(text("SHOW server_version")).scalar_one()
        fsync = connection.execute(text("SHOW fsync")).scalar_one()
        sync = connection.execute(text("SHOW synchronous_commit")).scalar_one()
    engine.dispose()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    durable = "durable commits" if fsync == "on" and sync == "on" else "NOT durable (test server)"
    rabbit = subprocess.run(
        ["/usr/bin/dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
        capture_output=True, text=True, check=False,
    ).stdout or "?"  # fmt: skip
    return (
        f"Machine: {os.cpu_count()} cores ({cpu}), {memory_kb // 1024 // 1024} GiB RAM; "
        f"Python {platform.python_version()}; PostgreSQL {version} (fsync={fsync}, "
        f"synchronous_commit={sync}: {durable}); RabbitMQ {rabbit}; all on one machine, "
        "over loopback."
    )
