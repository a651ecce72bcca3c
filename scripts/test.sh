#!/usr/bin/env bash
# The whole check, as `make test` and CI run it: install into .venv, start PostgreSQL and
# RabbitMQ on loopback, run ruff, mypy and pytest on every backend, then check the built package
# (scripts/check-package.sh), stop the servers even on failure. Extra arguments go to pytest
# (and then the package check is left out: they select part of the suite).
#
# The whole suite runs as two pytest processes side by side (with mypy and the docs build beside
# them), split by the `second_lane` mark (tests/conftest.py): most tests wait on a server or a
# program they started, so one process leaves the second core idle much of the time. Every
# RabbitMQ test is in the second lane, one at a time, because they share the broker (and some
# stop it).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/use-services.sh
use_services "test: using the services already started (scripts/services.sh down stops them)"
work=$(mktemp -d "${TMPDIR:-/tmp}/sagabox-test.XXXXXX")
trap '[ -n "$services_started" ] && scripts/services.sh down || true; rm -rf "$work"' EXIT INT TERM
# The browser installs (apt) while pip installs, and the servers boot meanwhile.
scripts/browser.sh >"$work/browser.log" 2>&1 &
browser=$!
scripts/bootstrap.sh
# The docs' tools, and the web frameworks their guides run: the suite executes every page.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --group docs
wait "$browser" || { cat "$work/browser.log"; exit 1; }
cat "$work/browser.log"
services_ready

echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$#" -gt 0 ]; then
  echo "test: mypy"
  .venv/bin/mypy
  echo "test: pytest $*"
  .venv/bin/pytest "$@"
  exit
fi
# mypy and the docs build run beside the tests (their report follows the tests'), and pytest in
# two lanes, the second lane's report after the first's. Not `mkdocs --quiet`: it silences the
# warnings that `--strict` would fail on, so a page left out of the nav passed.
(
  echo "test: mypy" && .venv/bin/mypy &&
    echo "test: docs" && NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir build/site
) >"$work/static.log" 2>&1 &
static=$!
echo "test: pytest, in two lanes side by side"
.venv/bin/pytest -p no:cacheprovider -m second_lane >"$work/second.log" 2>&1 &
second=$!
first_status=0
.venv/bin/pytest -p no:cacheprovider -m "not second_lane" || first_status=$?
second_status=0
wait "$second" || second_status=$?
echo "test: the second lane (RabbitMQ and the modules that run programs)"
cat "$work/second.log"
static_status=0
wait "$static" || static_status=$?
cat "$work/static.log"
if [ "$first_status" -ne 0 ] || [ "$second_status" -ne 0 ] || [ "$static_status" -ne 0 ]; then
  echo "test: failed (pytest lanes exit $first_status and $second_status, mypy + docs exit $static_status)"
  exit 1
fi
echo "test: the package a user installs"
scripts/check-package.sh
