#!/usr/bin/env bash
# `make bench`: start PostgreSQL (with durable commits) and RabbitMQ, run every benchmark, print
# the table and save it under bench/results/, stop the servers. Extra arguments go to bench.run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/use-services.sh
use_services "bench: using the services already running (the table says whether commits were durable)" \
  SAGABOX_PG_DURABLE=1
scripts/bootstrap.sh
# The peers, procrastinate (e) and DBOS (m), and the profiler, py-spy, live in an environment
# of their own: never in sagabox's. DBOS is pinned: (m) reads its figures against one release.
if [ ! -x .bench-venv/bin/py-spy ] || ! .bench-venv/bin/python -c "import dbos" 2>/dev/null; then
  python3 -m venv .bench-venv
  .bench-venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "procrastinate>=3.10" "psycopg[binary]>=3.2" "py-spy>=0.4" "dbos==3.4.0"
fi
services_ready
.venv/bin/python -m bench.run "$@"
