#!/usr/bin/env bash
# `make demo`: sagabox with only what the demo needs (the `demo` extra: freezegun) in a venv of
# its own, .demo-venv, then the loan example with simulated time. No dev tools, no server.
# Extra arguments go to `sagabox demo` (e.g. scripts/demo.sh checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .demo-venv/bin/python ]; then
  "$python" -m venv .demo-venv
fi
# Editable, so a change in the checkout shows at once; installed again only when incomplete.
if ! .demo-venv/bin/python -c "import sagabox, freezegun" 2>/dev/null; then
  .demo-venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
  .demo-venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[demo]"
fi
if [ "$#" -eq 0 ]; then set -- loan_request; fi
exec .demo-venv/bin/sagabox demo "$@"
