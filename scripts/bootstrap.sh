#!/usr/bin/env bash
# Create .venv (if missing) and install sagabox into it, editable, with the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Dependency groups (the dev tools) need pip >= 25.1.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[postgres,testing,metrics,tracing,web]" --group dev
