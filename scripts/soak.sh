#!/usr/bin/env bash
# The chaos soak on its own: start PostgreSQL and RabbitMQ, run `python -m tests.chaos.soak`
# with the given arguments (e.g. --sagas 10000), stop the servers. `make soak SAGAS=10000`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=""
cleanup() { [ -n "$started" ] && scripts/services.sh down || true; }
trap cleanup EXIT INT TERM

if [ ! -f .services/env ]; then
  scripts/services.sh start
  started=yes
fi
scripts/bootstrap.sh
scripts/services.sh wait
eval "$(scripts/services.sh env)"
.venv/bin/python -m tests.chaos.soak "$@"
