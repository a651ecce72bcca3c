"""(c) relay throughput against a raw kombu publish loop, and (f) relay memory on a big backlog.

    python -m bench.relay_speed [ROWS] [ROUNDS]

runs (c) alone on the servers of `scripts/services.sh` (start them with SAGABOX_PG_DURABLE=1).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kombu import Connection, Queue, binding
from sqlalchemy import text

from bench.common import (
    CpuUse,
    load_average,
    measuring_cpu,
    sagabox_process,
    scratch_database,
    server_urls,
    stop,
)
from outbox.claim import OutboxRow
from outbox.database import make_engine
from outbox.envelope import CONTENT_TYPE
from relay import Relay
from relay.broker import topic_exchange
from relay.coalesced_writes import coalesced_writes
from relay.publish_frames import PublishFrames

FILL = text(
    "INSERT INTO sagabox_outbox_messages (message_id, type, destination, partition_key, payload, "
    "headers, available_at, attempts, created_at) "
    "SELECT m.id, 'bench.Step', 'bench.Step', 'k' || (n % 1000), "
    "'{\"key\": \"k' || (n % 1000) || '\", \"note\": \"' || repeat('x', 200) || '\"}', "
    "jsonb_build_object('sagabox-type', 'bench.Step', 'sagabox-version', '1', "
    "'sagabox-message-id', m.id::text, 'sagabox-occurred-at', now()::text), now(), 0, now() "
    "FROM generate_series(1, :rows) AS n, LATERAL (SELECT gen_random_uuid() AS id) AS m"
)


def fill_outbox(url: str, rows: int) -> None:
    """`rows` due outbox rows of about 300 bytes each, written by SQL in one go."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(FILL, {"rows": rows})
    engine.dispose()


def bound_sink(connection: Connection, exchange: str) -> Queue:
    queue = Queue(f"{exchange}-sink", [binding(topic_exchange(exchange), routing_key="bench.Step")])
    bound: Queue = queue(connection.channel())
    bound.declare()
    return bound


def relay_rate(url: str, broker: str, rows: int) -> tuple[float, CpuUse]:
    """Rows per second the relay ships from a prefilled outbox to a bound, durable queue, and
    the CPU each side spent meanwhile."""
    fill_outbox(url, rows)
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    engine = make_engine(url)
    with Connection(broker) as connection:
        sink = bound_sink(connection, exchange)
        relay = Relay(engine, broker, exchange=exchange, batch_size=500)
        with measuring_cpu() as cpu:
            started = time.perf_counter()
            shipped = relay.drain()
            seconds = time.perf_counter() - started
        relay.close()
        sink.delete()
    engine.dispose()
    assert shipped == rows, (shipped, rows)
    return rows / seconds, cpu


def draining_relay(
    url: str, broker: str, exchange: str, *, quiet: bool = True, profile_to: Path | None = None
) -> subprocess.Popen[bytes]:
    """`sagabox relay --once` as a process: ships every due row in batches of 500, then exits."""
    return sagabox_process(
        "relay", "--once", "--batch-size", "500", "--db", url, "--broker", broker,
        "--exchange", exchange, quiet=quiet, profile_to=profile_to,
    )  # fmt: skip


def running_relay(url: str, broker: str, exchange: str) -> subprocess.Popen[bytes]:
    """`sagabox relay` as a process, in batches of 500, until stopped. It claims again 20 ms
    after a claim that found nothing it may publish: with several relays that happens while
    the others hold the rows of every key that is due (a key's rows go out in order)."""
    return sagabox_process(
        "relay", "--batch-size", "500", "--poll-interval", "0.02", "--log-level", "warning",
        "--db", url, "--broker", broker, "--exchange", exchange, quiet=True,
    )  # fmt: skip


def relay_processes_rate(url: str, broker: str, rows: int, processes: int) -> float:
    """Rows per second `processes` relay processes (`sagabox relay`) ship side by side, timed
    on the sink queue from the last sample that found it empty to the first that found it
    full, so interpreter start-up is not counted (and a sink filled between two samples is
    timed over one sampling period, not none). They run until stopped: `--once` would return
    at its first claim that found nothing it may publish, which the second relay's first claim
    often is (the other holds every key then), leaving one relay to do the work."""
    fill_outbox(url, rows)
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    with Connection(broker) as connection:
        sink = bound_sink(connection, exchange)
        relays = [running_relay(url, broker, exchange) for _ in range(processes)]
        empty = time.perf_counter()
        try:
            while True:
                depth = sink.queue_declare(passive=True).message_count
                now = time.perf_counter()
                if depth == 0:
                    empty = now
                if depth >= rows:
                    break
                if any(relay.poll() is not None for relay in relays):
                    raise RuntimeError(f"a relay exited with {depth} of {rows} shipped")
                time.sleep(0.01)  # the sampling period of the queue depth
        finally:
            stop(*relays)
            sink.delete()
    return rows / (now - empty)


def raw_publish_rate(
    url: str, broker: str, rows: int, *, as_relay: bool = False
) -> tuple[float, CpuUse]:
    """The same messages published by a bare kombu loop with the same confirm window (500),
    read from memory: what the broker and the client library allow, with no database; and the
    CPU each side spent meanwhile. `as_relay`: sent as the relay sends them, which plain kombu
    does not do: frames encoded by `relay.publish_frames`, each window's in few socket writes
    (`relay.coalesced_writes`). The relay's rate against that loop is what the database costs
    it."""
    fill_outbox(url, rows)
    engine = make_engine(url)
    with engine.connect() as connection:
        messages = [
            OutboxRow(*row)
            for row in connection.execute(
                text(
                    "SELECT id, message_id, type, destination, partition_key, payload, headers, "
                    "attempts FROM sagabox_outbox_messages ORDER BY id"
                )
            )
        ]
    engine.dispose()
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    with Connection(broker) as connection:
        sink = bound_sink(connection, exchange)
        channel = connection.channel()
        topic_exchange(exchange)(channel).declare()
        confirms = connection.transport.driver_type == "amqp"
        acked = [0]
        if confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(lambda tag, _multiple: acked.__setitem__(0, tag))
        with measuring_cpu() as cpu:
            started = time.perf_counter()
            for first in range(0, len(messages), 500):
                window = messages[first : first + 500]
                if as_relay:
                    with coalesced_writes(connection):
                        _publish_as_relay(channel, exchange, window)
                else:
                    _publish(channel, exchange, window)
                while confirms and acked[0] < min(first + 500, len(messages)):
                    connection.drain_events(timeout=30)
            seconds = time.perf_counter() - started
        sink.delete()
    return len(messages) / seconds, cpu


def _publish(channel: object, exchange: str, rows: Sequence[OutboxRow]) -> None:
    for row in rows:
        message = channel.prepare_message(  # type: ignore[attr-defined]
            row.payload.encode(), 0, CONTENT_TYPE, "utf-8", dict(row.headers),
            {"delivery_mode": 2, "message_id": str(row.message_id)},
        )  # fmt: skip
        channel.basic_publish(message, exchange, row.destination)  # type: ignore[attr-defined]


def _publish_as_relay(channel: Any, exchange: str, rows: Sequence[OutboxRow]) -> None:
    frames = PublishFrames(channel.channel_id, channel.connection.frame_max, exchange)
    for row in rows:
        published = frames.publish(
            channel.connection, row, row.payload.encode(), False, str(row.message_id)
        )
        assert published, "every bench row has the relay's usual shape"


def relay_memory(url: str, broker: str, rows: int) -> tuple[float, float, float, float]:
    """Drain `rows` with `sagabox relay --once` as a process, sampling its resident memory:
    (MiB after warm-up, peak MiB, MiB at the end, seconds)."""
    fill_outbox(url, rows)
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    process = draining_relay(url, broker, exchange)
    samples: list[float] = []
    status = Path(f"/proc/{process.pid}/status")
    try:
        while process.poll() is None:
            try:
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS"))
                samples.append(int(line.split()[1]) / 1024)
            except (OSError, StopIteration):
                pass
            time.sleep(0.5)  # the sampling period
    finally:
        stop(process)
    seconds = time.monotonic() - started
    warm = samples[min(len(samples) - 1, 10)] if samples else 0.0  # after ~5 s
    return warm, max(samples, default=0.0), samples[-1] if samples else 0.0, seconds


def main() -> int:
    """`python -m bench.relay_speed [ROWS] [ROUNDS]`: (c) alone, in rounds of the raw loop, one
    relay in this process and two relay processes, each on a fresh database; the medians last."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("rows", type=int, nargs="?", default=100_000, help="rows a measurement")
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    args = parser.parse_args()
    servers = server_urls()
    if servers is None:
        return 2
    postgres, amqp = servers
    rates: dict[str, list[float]] = {"raw": [], "one": [], "two": [], "as_relay": []}
    for round_number in range(1, args.rounds + 1):
        load = load_average()
        with scratch_database(postgres) as url:
            raw, raw_cpu = raw_publish_rate(url, amqp, args.rows)
        with scratch_database(postgres) as url:
            one, one_cpu = relay_rate(url, amqp, args.rows)
        with scratch_database(postgres) as url:
            two = relay_processes_rate(url, amqp, args.rows, processes=2)
        with scratch_database(postgres) as url:
            as_relay, as_relay_cpu = raw_publish_rate(url, amqp, args.rows, as_relay=True)
        for name, rate in (("raw", raw), ("one", one), ("two", two), ("as_relay", as_relay)):
            rates[name].append(rate)
        print(
            f"round {round_number}: raw loop {raw:,.0f}, one relay {one:,.0f} ({one / raw:.2f}), "
            f"two relays {two:,.0f} ({two / raw:.2f}) msg/s; raw loop sending as the relay does "
            f"{as_relay:,.0f} (one relay {one / as_relay:.2f} of it, two "
            f"{two / as_relay:.2f}); load before {load}\n"
            f"  CPU, raw loop: {raw_cpu.per(args.rows)}\n"
            f"  CPU, one relay: {one_cpu.per(args.rows)}\n"
            f"  CPU, raw loop sending as the relay does: {as_relay_cpu.per(args.rows)}",
            flush=True,
        )
    raw, one, two, as_relay = (statistics.median(values) for values in rates.values())
    print(
        f"medians of {args.rounds} rounds, {args.rows:,} rows: raw loop {raw:,.0f}, one relay "
        f"{one:,.0f} ({one / raw:.2f}), two relays {two:,.0f} ({two / raw:.2f}) msg/s; raw "
        f"loop sending as the relay does {as_relay:,.0f} (one relay {one / as_relay:.2f})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
