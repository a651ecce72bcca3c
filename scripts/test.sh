#!/usr/bin/env bash
# The whole check, as `make test` and CI run it: install into .venv, start PostgreSQL and
# RabbitMQ on loopback, run ruff, mypy and pytest on every backend, stop the servers even on
# failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/use-services.sh
use_services "test: using the services already started (scripts/services.sh down stops them)"
scripts/bootstrap.sh
scripts/browser.sh
services_ready

echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: mypy"
.venv/bin/mypy
echo "test: pytest"
.venv/bin/pytest "$@"
