"""(a) The physical limit: pgbench running the statements of a saga step, with no Python in the way.

The statements are the ones a worker's transaction sends for one `bench.apps` step (the inbox
insert, the saga row's read and version-checked update, the journal line, the outbox row), on
sagabox's own tables and indexes (a migrated scratch database), prepared once per connection
(`-M prepared`) as psycopg prepares a worker's. One step per transaction is the limit of the
unbatched worker; `steps` steps per transaction (the workers' batch size) that of the batched one.
Each pgbench client owns half the sagas, as each batch locks its own: no deadlocks, no retries.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from glob import glob
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from outbox.database import make_engine

SAGAS = 1000
CLIENTS = 2

# One step, as the worker sends it (see `sagas.store`, `outbox.inbox`, `outbox.writer`).
STEP = """\\set n random(0, {per_client} - 1)
\\set k :client_id * {per_client} + :n
INSERT INTO sagabox_inbox_messages (consumer, message_id, processed_at) VALUES ('pgbench', gen_random_uuid(), now()) ON CONFLICT DO NOTHING RETURNING message_id;
SELECT id, incarnation, version, data, state, definition_version, data_version, created_at, updated_at, finished_at, timeouts FROM sagabox_saga_instances WHERE saga_type = 'pgbench' AND correlation_id = 'k' || :k::int {lock}\\gset
UPDATE sagabox_saga_instances SET saga_type = 'pgbench', correlation_id = 'k' || :k::int, state = 'open', data = jsonb_build_object('steps', :version::int), version = :version::int + 1, definition_version = 1, data_version = 1, updated_at = now(), finished_at = NULL, timeouts = NULL, next_timeout_at = NULL WHERE id = :id::uuid AND version = :version::int RETURNING id;
INSERT INTO sagabox_saga_journal (saga_id, saga_type, correlation_id, incarnation, version, definition_version, from_state, to_state, trigger, message_id, outcome, at) VALUES (:id::uuid, 'pgbench', 'k' || :k::int, :incarnation::uuid, :version::int + 1, 1, 'open', 'open', 'bench.Step', gen_random_uuid(), 'transition', now());
INSERT INTO sagabox_outbox_messages (message_id, type, destination, partition_key, payload, headers, available_at, attempts, created_at) VALUES (gen_random_uuid(), 'bench.Counted', 'bench.Counted', 'k' || :k::int, '{{"key": "k", "steps": 1}}', '{{"sagabox-type": "bench.Counted"}}', now(), 0, now());
"""  # noqa: E501 - pgbench wants one statement per line


def script(steps: int) -> str:
    """The pgbench script of one transaction holding `steps` saga steps."""
    # A batch reads its rows locked (`FOR UPDATE`); one step alone reads them plainly.
    step = STEP.format(per_client=SAGAS // CLIENTS, lock="FOR UPDATE " if steps > 1 else "")
    return "BEGIN;\n" + step * steps + "END;\n"


def _pgbench() -> str:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not found:
        raise RuntimeError("pgbench not found: install postgresql-contrib")
    return found[-1]


def seed(url: str) -> None:
    """The saga rows (k0 .. k999) for pgbench to step."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, incarnation, "
                "state, data, version, created_at, updated_at) SELECT gen_random_uuid(), "
                "'pgbench', 'k' || n, gen_random_uuid(), 'open', '{\"steps\": 0}', 1, now(), "
                "now() FROM generate_series(0, :last) AS n"
            ),
            {"last": SAGAS - 1},
        )
    engine.dispose()


def steps_per_second(url: str, *, steps: int, seconds: int, clients: int = CLIENTS) -> float:
    """Run transactions of `steps` saga steps with `clients` connections for `seconds`;
    return the saga steps per second."""
    parsed = make_url(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script(steps))
    try:
        result = subprocess.run(  # noqa: S603 - pgbench from the PostgreSQL packages
            [
                _pgbench(), "-n", "-M", "prepared", "-f", file.name, "-c", str(clients),
                "-j", str(clients), "-T", str(seconds), "-h", parsed.host or "127.0.0.1",
                "-p", str(parsed.port), "-U", parsed.username or "postgres", parsed.database or "",
            ],
            env={**os.environ, "PGPASSWORD": parsed.password or ""},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        Path(file.name).unlink()
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    failed = re.search(r"number of failed transactions: ([1-9][0-9]*)", result.stdout)
    if match is None or failed is not None:
        raise RuntimeError(f"pgbench failed or printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1)) * steps
