#!/usr/bin/env bash
# The whole check, as `make test` and CI run it: install into .venv, start PostgreSQL and
# RabbitMQ on loopback, run ruff, mypy and pytest on every backend, stop the servers even on
# failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

started=""
cleanup() { [ -n "$started" ] && scripts/services.sh down || true; }
trap cleanup EXIT INT TERM

if [ -f .services/env ]; then
  echo "test: using the services already started (scripts/services.sh down stops them)"
else
  scripts/services.sh start # RabbitMQ boots while we install
  started=yes
fi
scripts/bootstrap.sh
scripts/services.sh wait
eval "$(scripts/services.sh env)"

echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
.venv/bin/pytest "$@"
