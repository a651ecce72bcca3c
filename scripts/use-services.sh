# Sourced by test.sh, bench.sh and soak.sh: use the servers of scripts/services.sh, starting them
# (and stopping them on exit, even on failure) unless they already run.
#
#   use_services "MESSAGE" [VAR=value ...]   start them with those variables, unless running
#                                            (then print MESSAGE, if any)
#   services_ready                           wait until they accept connections, export URLs

services_started=""

use_services() {
  local running_message=$1
  shift
  trap '[ -n "$services_started" ] && scripts/services.sh down || true' EXIT INT TERM
  if [ -f .services/env ]; then
    if [ -n "$running_message" ]; then echo "$running_message"; fi
  else
    env "$@" scripts/services.sh start # the servers boot while the caller installs
    services_started=yes
  fi
}

services_ready() {
  scripts/services.sh wait
  eval "$(scripts/services.sh env)"
}
