"""(g) Where the time goes: py-spy samples of a worker (one step per transaction, and batched)
and of the relay, summarized as the share of samples spent inside each of sagabox's functions.

py-spy lives in the bench environment (`.bench-venv`, made by `make bench`); without it the
section is skipped.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections import Counter
from pathlib import Path

from kombu import Connection

from bench import steps
from bench.common import PY_SPY, stop
from bench.relay_speed import bound_sink, draining_relay, fill_outbox

# Frames from sagabox's own packages; a frame reads "function (path/to/file.py:line)".
_OURS = re.compile(
    r"^(?P<function>.+) \((?P<path>(?:.*/)?(?:sagas|outbox|relay|sagabox)/[^/]+\.py)"
)


def top_functions(raw: Path, count: int = 8) -> list[tuple[str, float]]:
    """The `count` functions of sagabox with the largest share of samples, from py-spy's raw
    (collapsed stack) output. A sample counts for the innermost sagabox function on its stack,
    with the library calls it made: "what our code costs, line by line of ours"."""
    inside: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        innermost = "elsewhere (no sagabox frame)"
        for frame in stack.split(";"):
            match = _OURS.match(frame)
            if match is not None:
                path = match["path"]
                innermost = f"{path[path.rfind('/', 0, path.rfind('/')) + 1 :]}:{match['function']}"
        if innermost.endswith(":<module>"):
            innermost = "start-up (imports)"
        inside[innermost] += int(samples)
    return [(name, n / total) for name, n in inside.most_common(count)] if total else []


def describe(title: str, top: list[tuple[str, float]]) -> str:
    """One line of the report: the title, then each function with its share of samples."""
    shares = ", ".join(f"`{name}` {share:.0%}" for name, share in top)
    return f"(g) {title}: {shares}."


def profile_worker(
    url: str, broker: str, *, batch_size: int, messages: int
) -> list[tuple[str, float]] | None:
    """Profile one worker process driving saga steps; None without py-spy."""
    if not PY_SPY.exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "worker.txt"
        steps.saga_steps_per_second(
            url, broker, workers=1, messages=messages, batch_size=batch_size, profile_to=raw
        )
        return top_functions(raw)


def profile_relay(url: str, broker: str, rows: int) -> list[tuple[str, float]] | None:
    """Profile `sagabox relay --once` draining `rows` to RabbitMQ; None without py-spy."""
    if not PY_SPY.exists():
        return None
    fill_outbox(url, rows)
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder, Connection(broker) as connection:
        raw = Path(folder) / "relay.txt"
        sink = bound_sink(connection, exchange)
        relay = draining_relay(url, broker, exchange, profile_to=raw)
        try:
            relay.wait(timeout=600)
        finally:
            stop(relay)
            sink.delete()
        return top_functions(raw)
