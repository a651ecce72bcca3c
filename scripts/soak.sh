#!/usr/bin/env bash
# The chaos soak on its own: start PostgreSQL and RabbitMQ, run `python -m tests.chaos.soak`
# with the given arguments (e.g. --sagas 10000), stop the servers. `make soak SAGAS=10000`.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/use-services.sh
use_services ""
scripts/bootstrap.sh
services_ready
.venv/bin/python -m tests.chaos.soak "$@"
