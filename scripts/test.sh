#!/usr/bin/env bash
# The whole check, as `make test` and CI run it: install into .venv, start PostgreSQL and
# RabbitMQ on loopback, run ruff, mypy and pytest on every backend, then check the built package
# (scripts/check-package.sh), stop the servers even on failure. Extra arguments go to pytest
# (and then the package check is left out: they select part of the suite).
#
# The whole suite runs as two pytest processes side by side, split by the `second_lane` mark
# (tests/conftest.py): most tests wait on a server or a program they started, so one process
# leaves the second core idle much of the time. Every RabbitMQ test is in the second lane, one
# at a time, because they share the broker (and some stop it).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/use-services.sh
use_services "test: using the services already started (scripts/services.sh down stops them)"
scripts/bootstrap.sh
# The docs' tools, and the web frameworks their guides run: the suite executes every page.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --group docs
scripts/browser.sh
services_ready

echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: mypy"
.venv/bin/mypy
echo "test: docs"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir build/site
if [ "$#" -gt 0 ]; then
  echo "test: pytest $*"
  exec .venv/bin/pytest "$@"
fi
echo "test: pytest, in two lanes side by side (the second lane's output follows the first's)"
second_log=$(mktemp "${TMPDIR:-/tmp}/sagabox-second-lane.XXXXXX")
.venv/bin/pytest -p no:cacheprovider -m second_lane >"$second_log" 2>&1 &
second=$!
first_status=0
.venv/bin/pytest -p no:cacheprovider -m "not second_lane" || first_status=$?
second_status=0
wait "$second" || second_status=$?
echo "test: the second lane (RabbitMQ and the modules that run programs)"
cat "$second_log"
rm -f "$second_log"
if [ "$first_status" -ne 0 ] || [ "$second_status" -ne 0 ]; then
  echo "test: pytest failed (first lane exit $first_status, second lane exit $second_status)"
  exit 1
fi
echo "test: the package a user installs"
scripts/check-package.sh
