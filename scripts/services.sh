#!/usr/bin/env bash
# Runs the PostgreSQL and RabbitMQ servers the test suite needs, on 127.0.0.1 only, with their
# data in a temporary folder. Installs them from Debian packages when missing (needs root).
#
#   scripts/services.sh up      start both and wait until they accept connections
#   scripts/services.sh start   start both without waiting (boot them while something else runs)
#   scripts/services.sh wait    wait until both are ready
#   scripts/services.sh env     print `export` lines with their URLs (eval "$(... env)")
#   scripts/services.sh down    stop both (by their own stop commands, then by PID) and clean up
#   scripts/services.sh rabbitmq-stop|rabbitmq-start
#                               stop or restart the RabbitMQ application (its node and data stay),
#                               for tests of a broker outage
#   scripts/services.sh rabbitmqctl ARGS...
#                               run rabbitmqctl against our node (tests lower max_message_size)
#
# SAGABOX_PG_DURABLE=1 keeps PostgreSQL's durable commits (for benchmarks).
# Ports can be moved with SAGABOX_PG_PORT, SAGABOX_AMQP_PORT, SAGABOX_AMQP_DIST_PORT and
# SAGABOX_EPMD_PORT. The state (URLs, data folder) is kept in .services/env at the repo top.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pointer="$repo/.services/env"

PG_PORT=${SAGABOX_PG_PORT:-54329}
AMQP_PORT=${SAGABOX_AMQP_PORT:-56729}
AMQP_DIST_PORT=${SAGABOX_AMQP_DIST_PORT:-56739}
EPMD_PORT=${SAGABOX_EPMD_PORT:-54369}
PG_USER=sagabox
PG_PASSWORD=sagabox
RABBIT_BIN=/usr/lib/rabbitmq/bin

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "installing $* needs root (or install it yourself)"
  log "installing $* from Debian packages"
  if [ ! -f /tmp/.sagabox-apt-updated ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && touch /tmp/.sagabox-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    apt_install postgresql postgresql-contrib
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

# RabbitMQ reads everything from the environment: point all of it into our folder, loopback only.
rabbit_env() {
  local dir="$1/rabbitmq"
  export HOME="$dir"
  export RABBITMQ_NODENAME="sagabox@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$AMQP_DIST_PORT"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT="$EPMD_PORT"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

write_pointer() {
  mkdir -p "$(dirname "$pointer")"
  cat >"$pointer" <<EOF
export SAGABOX_SERVICES_DIR='$1'
export SAGABOX_PG_PORT='$PG_PORT'
export SAGABOX_AMQP_PORT='$AMQP_PORT'
export SAGABOX_AMQP_DIST_PORT='$AMQP_DIST_PORT'
export SAGABOX_EPMD_PORT='$EPMD_PORT'
export SAGABOX_TEST_POSTGRES_URL='postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/sagabox'
export SAGABOX_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT//'
EOF
}

load_pointer() {
  [ -f "$pointer" ] || return 1
  # shellcheck disable=SC1090
  . "$pointer"
  PG_PORT=$SAGABOX_PG_PORT AMQP_PORT=$SAGABOX_AMQP_PORT
  AMQP_DIST_PORT=$SAGABOX_AMQP_DIST_PORT EPMD_PORT=$SAGABOX_EPMD_PORT
}

start_rabbitmq() {
  local dir="$1/rabbitmq"
  [ -x "$RABBIT_BIN/rabbitmq-server" ] || apt_install rabbitmq-server
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
EOF
  echo '[].' >"$dir/enabled_plugins"
  (
    rabbit_env "$1"
    setsid "$RABBIT_BIN/rabbitmq-server" >"$dir/log/console.log" 2>&1 </dev/null &
  )
  log "RabbitMQ booting on 127.0.0.1:$AMQP_PORT"
}

start_postgres() {
  local dir="$1/postgres" bin
  bin=$(pg_bin)
  mkdir -p "$dir"
  echo "$PG_PASSWORD" >"$dir/pwfile"
  chown -R postgres: "$dir"
  chmod 700 "$dir"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-instructions >/dev/null
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir'
max_connections = 200
EOF
  # Durability off for tests: throwaway data, and much faster. Benchmarks keep PostgreSQL's
  # durable defaults (SAGABOX_PG_DURABLE=1), so their numbers mean what they would in production.
  if [ "${SAGABOX_PG_DURABLE:-0}" != 1 ]; then
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >>"$dir/data/postgresql.conf"
  fi
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
  runuser -u postgres -- "$bin/createdb" -h "$dir" -p "$PG_PORT" -U "$PG_USER" sagabox
  log "PostgreSQL ready on 127.0.0.1:$PG_PORT"
}

cmd_start() {
  if load_pointer && [ -d "${SAGABOX_SERVICES_DIR:-}" ]; then
    die "services already started (state in $SAGABOX_SERVICES_DIR): run '$0 down' first"
  fi
  for port in "$PG_PORT" "$AMQP_PORT" "$AMQP_DIST_PORT" "$EPMD_PORT"; do
    port_busy "$port" && die "port $port on 127.0.0.1 is in use: stop what holds it, or move ours (SAGABOX_*_PORT)"
  done
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/sagabox-services.XXXXXX")
  chmod 755 "$dir" # the postgres user must reach its data folder inside
  write_pointer "$dir"
  start_rabbitmq "$dir" # the slow one boots while PostgreSQL starts
  start_postgres "$dir"
}

cmd_wait() {
  load_pointer || die "no services started: run '$0 up'"
  local dir="$SAGABOX_SERVICES_DIR/rabbitmq"
  if ! (rabbit_env "$SAGABOX_SERVICES_DIR" &&
    "$RABBIT_BIN/rabbitmqctl" wait --timeout 120 "$dir/rabbitmq.pid" >/dev/null 2>&1); then
    tail -n 30 "$dir/log/console.log" >&2 || true
    die "RabbitMQ did not start; its log is above"
  fi
  log "RabbitMQ ready on 127.0.0.1:$AMQP_PORT"
}

cmd_down() {
  load_pointer || { log "nothing to stop"; return 0; }
  local dir="$SAGABOX_SERVICES_DIR" bin pid
  if [ -f "$dir/rabbitmq/rabbitmq.pid" ]; then
    pid=$(cat "$dir/rabbitmq/rabbitmq.pid")
    (rabbit_env "$dir" && "$RABBIT_BIN/rabbitmqctl" shutdown >/dev/null 2>&1) || kill "$pid" 2>/dev/null || true
    stop_pid "$pid"
  fi
  # Only our private epmd, never a system-wide one.
  epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
  if [ -f "$dir/postgres/data/postmaster.pid" ]; then
    bin=$(pg_bin)
    pid=$(head -n 1 "$dir/postgres/data/postmaster.pid")
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/postgres/data" -m fast -w stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    stop_pid "$pid"
  fi
  case "$dir" in */sagabox-services.*) rm -rf "$dir" ;; esac
  rm -f "$pointer"
  log "stopped"
}

# Wait for a process to be gone (a zombie counts as gone), then insist.
stop_pid() {
  local pid="$1" i state
  for i in $(seq 1 100); do
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    case "$state" in "" | Z*) return 0 ;; esac
    [ "$i" -eq 50 ] && kill -9 "$pid" 2>/dev/null
    sleep 0.1
  done
  log "warning: process $pid did not stop"
}

# Stop or start the broker application inside the running node: every connection drops and the
# port closes, while durable queues and persistent messages stay on disk for the restart.
cmd_rabbitmq() {
  load_pointer || die "no services started: run '$0 up'"
  local tries=1
  # A start right after a stop can find the stop still ending inside the node (the prelaunch
  # fails: "mnesia already running"); it is waited out, a few seconds at most.
  until (rabbit_env "$SAGABOX_SERVICES_DIR" && "$RABBIT_BIN/rabbitmqctl" "$1" >/dev/null); do
    if [ "$1" != start_app ] || [ "$tries" -ge 10 ]; then
      die "RabbitMQ: $1 failed"
    fi
    tries=$((tries + 1))
    sleep 1
  done
  if [ "$1" = start_app ]; then
    (rabbit_env "$SAGABOX_SERVICES_DIR" && "$RABBIT_BIN/rabbitmqctl" await_startup >/dev/null)
  fi
  log "RabbitMQ: $1 done"
}

cmd_rabbitmqctl() {
  load_pointer || die "no services started: run '$0 up'"
  (rabbit_env "$SAGABOX_SERVICES_DIR" && "$RABBIT_BIN/rabbitmqctl" "$@")
}

case "${1:-}" in
  up) cmd_start && cmd_wait ;;
  start) cmd_start ;;
  wait) cmd_wait ;;
  down) cmd_down ;;
  rabbitmq-stop) cmd_rabbitmq stop_app ;;
  rabbitmq-start) cmd_rabbitmq start_app ;;
  rabbitmqctl) shift && cmd_rabbitmqctl "$@" ;;
  env) load_pointer && cat "$pointer" || die "no services started: run '$0 up'" ;;
  *) die "usage: $0 up|start|wait|env|down|rabbitmq-stop|rabbitmq-start|rabbitmqctl ARGS" ;;
esac
