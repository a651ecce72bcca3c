"""(a) The physical limit: pgbench running the SQL of one saga step, with no Python in the way.

One transaction: update one of 1,000 saga rows (version and data), insert an outbox row, insert
an inbox row; the same shape a worker's transaction has (`bench/apps.py`).
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

SCRIPT = """\\set id random(1, 1000)
BEGIN;
UPDATE sagabox_saga_instances SET version = version + 1, data = jsonb_set(data, '{steps}', to_jsonb((data->>'steps')::int + 1)), updated_at = now() WHERE saga_type = 'pgbench' AND correlation_id = 'k' || :id;
INSERT INTO sagabox_outbox_messages (message_id, type, destination, partition_key, payload, headers, available_at, attempts, created_at) VALUES (gen_random_uuid(), 'bench.Step', 'bench', 'k' || :id, '{"key": "k"}', '{}', now() + interval '1 day', 0, now());
INSERT INTO sagabox_inbox_messages (consumer, message_id, processed_at) VALUES ('pgbench', gen_random_uuid(), now());
END;
"""  # noqa: E501 - pgbench wants one statement per line


def _pgbench() -> str:
    found = sorted(glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not found:
        raise RuntimeError("pgbench not found: install postgresql-contrib")
    return found[-1]


def seed(url: str) -> None:
    """1,000 saga rows for pgbench to update."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sagabox_saga_instances (id, saga_type, correlation_id, incarnation, "
                "state, data, version, created_at, updated_at) SELECT gen_random_uuid(), "
                "'pgbench', 'k' || n, gen_random_uuid(), 'open', '{\"steps\": 0}', 1, now(), "
                "now() FROM generate_series(1, 1000) AS n"
            )
        )
    engine.dispose()


def transactions_per_second(url: str, clients: int, seconds: int) -> float:
    """Run the saga-step script with `clients` connections for `seconds`; return the TPS."""
    parsed = make_url(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(SCRIPT)
    try:
        result = subprocess.run(  # noqa: S603 - pgbench from the PostgreSQL packages
            [
                _pgbench(), "-n", "-f", script.name, "-c", str(clients), "-j", str(clients),
                "-T", str(seconds), "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port),
                "-U", parsed.username or "postgres", parsed.database or "",
            ],
            env={**os.environ, "PGPASSWORD": parsed.password or ""},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        Path(script.name).unlink()
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")
    return float(match.group(1))
