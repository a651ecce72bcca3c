#!/usr/bin/env bash
# What a user installs works (CI runs this from scripts/test.sh, on the servers it started):
#  1. build the wheel and the sdist;
#  2. install the wheel into a fresh virtualenv with its runtime dependencies and the postgres
#     extra only, and run every command from it: `--help` of each, then real runs on SQLite,
#     PostgreSQL and a relay + worker round trip on RabbitMQ; `sagabox demo` names its extra,
#     then plays once that extra is installed;
#  3. unpack the sdist, install it with the test dependencies, and run a fast selection of the
#     suite from it (the whole suite already ran from the checkout).
# Needs $SAGABOX_TEST_POSTGRES_URL and $SAGABOX_TEST_AMQP_URL (`scripts/services.sh env`).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SAGABOX_TEST_POSTGRES_URL:?start the servers first: scripts/services.sh up}"
: "${SAGABOX_TEST_AMQP_URL:?start the servers first: scripts/services.sh up}"

repo=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sagabox-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS
step() { printf '\npackage: %s (%ss)\n' "$*" "$((SECONDS - started))"; }
mask() { sed -E 's#(://[^:/@ ]*:)[^@ ]*@#\1***@#g'; }
pip_into() { local venv=$1; shift; .venv/bin/python -m pip --python "$venv/bin/python" --disable-pip-version-check "$@"; }

step "build the wheel and the sdist"
.venv/bin/python -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log"
  exit 1
}
wheel=$(ls "$work"/dist/sagabox-*.whl)
sdist=$(ls "$work"/dist/sagabox-*.tar.gz)
ls -l "$work/dist" | sed 1d
tar -tzf "$sdist" >"$work/sdist.list"
for needed in LICENSE tests/conftest.py tests/bank_app.py examples/loan_request/scenario.py migrations/env.py; do
  grep -q "^sagabox-[^/]*/$needed$" "$work/sdist.list" || { echo "package: the sdist lacks $needed"; exit 1; }
done

step "install the wheel with the postgres extra only, into a fresh venv"
python3 -m venv --without-pip "$work/venv"
pip_into "$work/venv" install --quiet "$wheel[postgres]"
pip_into "$work/venv" list --format=freeze
mkdir "$work/run"
# Outside the checkout and without PYTHONPATH: nothing may come from the source tree.
sagabox() {
  echo "+ sagabox $*" | mask
  (cd "$work/run" && env -u PYTHONPATH "$work/venv/bin/sagabox" "$@")
}
py() { (cd "$work/run" && env -u PYTHONPATH "$work/venv/bin/python" "$@"); }

step "--help of every command"
sagabox --help >/dev/null
# Every subcommand's --help in one process: a process each costs seconds apiece on a busy
# machine and imports nothing `sagabox --help` did not (the real runs below are processes).
py -c '
import argparse
from sagabox.cli import build_parser, main
def walk(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [*path, name]
                yield from walk(sub, [*path, name])
for command in walk(build_parser(), []):
    print("+ sagabox", *command, "--help", flush=True)
    try:
        main([*command, "--help"])
    except SystemExit as exit:
        assert exit.code == 0, (command, exit.code)
' | grep '^+ sagabox'

step "every command on SQLite and the in-process broker"
sqlite="sqlite:///$work/run/app.db"
sagabox db upgrade --db "$sqlite"
sagabox db current --db "$sqlite"
sagabox relay --once --db "$sqlite" --broker memory://
sagabox worker --once --app sagabox.examples.checkout.apps:apps --endpoint email --db "$sqlite" --broker memory://
sagabox dlq list --db "$sqlite"
sagabox inbox prune --older-than 7d --db "$sqlite"
sagabox sagas list --db "$sqlite"
sagabox sagas stuck --older-than 1h --db "$sqlite"
sagabox graph --app sagabox.examples.order.apps:apps >/dev/null
sagabox graph --check --app sagabox.examples.order.apps:apps

step "db upgrade on PostgreSQL, and a relay + worker round trip on RabbitMQ"
postgres=$(py - "$SAGABOX_TEST_POSTGRES_URL" <<'PY'
import sys, uuid
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
server = make_url(sys.argv[1])
name = f"package_{uuid.uuid4().hex[:8]}"
admin = create_engine(server, isolation_level="AUTOCOMMIT")
with admin.connect() as connection:
    connection.execute(text(f'CREATE DATABASE "{name}"'))
admin.dispose()
# Plain postgresql://, as a user writes it: sagabox and SQLAlchemy both read it as psycopg 3.
print(server.set(drivername="postgresql", database=name).render_as_string(hide_password=False))
PY
)
amqp=$SAGABOX_TEST_AMQP_URL
app=sagabox.examples.checkout.apps:apps
sagabox db upgrade --db "$postgres"
sagabox db current --db "$postgres"
# The worker declares its queue and bindings; then an order commits with its event.
sagabox worker --once --app "$app" --endpoint email --db "$postgres" --broker "$amqp"
py - "$postgres" <<'PY'
import sys
from decimal import Decimal
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sagabox.examples.checkout.apps import business, place_order
from sagabox.examples.checkout.messages import Line
engine = create_engine(sys.argv[1])
business.create_all(engine)
with Session(engine) as session, session.begin():
    lines = [Line(sku="tea", quantity=2, price=Decimal("3.50"))]
    place_order(session, order_id="O-1", customer="ada@example.com", lines=lines)
engine.dispose()
PY
sagabox relay --once --db "$postgres" --broker "$amqp" | tee "$work/relay.out"
grep -q "shipped 1 messages" "$work/relay.out"
sagabox worker --once --app "$app" --endpoint email --db "$postgres" --broker "$amqp" | tee "$work/worker.out"
grep -q "processed 1 messages" "$work/worker.out"
py - "$postgres" <<'PY'
import sys
from sqlalchemy import create_engine, select
from sagabox.examples.checkout.tables import confirmations
engine = create_engine(sys.argv[1])
with engine.connect() as connection:
    rows = connection.execute(select(confirmations.c.order_id)).scalars().all()
assert rows == ["O-1"], rows
print("package: the order's confirmation went through the broker and was handled once")
PY
sagabox dlq list --db "$postgres"
sagabox sagas list --db "$postgres"
py - "$SAGABOX_TEST_POSTGRES_URL" "$postgres" <<'PY'
import sys
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
admin = create_engine(make_url(sys.argv[1]), isolation_level="AUTOCOMMIT")
with admin.connect() as connection:
    connection.execute(text(f'DROP DATABASE "{make_url(sys.argv[2]).database}" WITH (FORCE)'))
admin.dispose()
PY

step "sagabox demo names its extra, then plays with it"
if sagabox demo loan_request >"$work/demo.out" 2>&1; then
  echo "package: sagabox demo ran without freezegun installed?"
  exit 1
fi
cat "$work/demo.out"
grep -q "pip install 'sagabox\[demo\]'" "$work/demo.out"
pip_into "$work/venv" install --quiet "$wheel[demo]"
sagabox demo loan_request | tail -n 6

step "tests from the unpacked sdist"
tar -xzf "$sdist" -C "$work"
source_dir=$(ls -d "$work"/sagabox-*/)
python3 -m venv --without-pip "$work/sdist-venv"
# The test tools of the dev group, less the linters and the build tools (they ran already).
mapfile -t tools < <(.venv/bin/python - <<'PY'
import tomllib
groups = tomllib.load(open("pyproject.toml", "rb"))["dependency-groups"]
for requirement in groups["dev"]:
    if not requirement.startswith(("sagabox", "mypy", "ruff", "build", "setuptools")):
        print(requirement)
PY
)
# Editable, like a checkout: `sagabox.migrations` and `sagabox.examples` are folders at the top
# of the sdist, mapped into the package by the install.
pip_into "$work/sdist-venv" install --quiet -e "${source_dir}[postgres,testing,metrics,tracing]" "${tools[@]}"
# A fast selection on SQLite and memory:// (the whole suite ran from the checkout on every
# backend): what the sdist must carry besides the package, the migrations and the examples,
# and the command line and settings that find them. Less the two that only run the program
# (`sagabox --version`, `sagabox demo loan_request`): the wheel's commands above did that.
(cd "$source_dir" && env -u PYTHONPATH "$work/sdist-venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m "not postgres and not rabbitmq" \
  -k "not test_console_script_is_installed and not test_sagabox_demo_runs_as_a_program_with_no_server" \
  tests/test_migrations.py tests/test_cli.py tests/examples tests/test_settings.py)

step "done: the wheel, the CLI from it, and the sdist's tests all pass"
