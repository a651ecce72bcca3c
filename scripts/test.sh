#!/usr/bin/env bash
# The whole check, as `make test` and CI run it: install into .venv, start PostgreSQL and
# RabbitMQ on loopback, run ruff, mypy and pytest on every backend, then check the built package
# (scripts/check-package.sh), stop the servers even on failure. Extra arguments go to pytest
# (and then the package check is left out: they select part of the suite).
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
echo "test: pytest"
.venv/bin/pytest "$@"
if [ "$#" -eq 0 ]; then
  echo "test: the package a user installs"
  scripts/check-package.sh
fi
