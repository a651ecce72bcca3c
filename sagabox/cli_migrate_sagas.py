"""`sagabox sagas migrate`: move live saga instances to the deployed definitions, or preview it.

Lists the live instances each saga's current definition changes, per (type, version, state),
with what they become and the ones it cannot load; without `--dry-run` it migrates them in
batches, one transaction each, journaling every instance it changes.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from outbox.database import make_engine
from sagabox.app import load_apps
from sagabox.cli_common import Groups, database_argument
from sagabox.graph import Problem
from sagas.definition import Saga
from sagas.migration import InstancePlan, migrate_all, occupied, plans


def add_to(sagas_actions: Groups) -> None:
    """Register `migrate` under `sagabox sagas`."""
    migrate = sagas_actions.add_parser(
        "migrate", help="move live instances to the deployed saga versions (or --dry-run)"
    )
    database_argument(migrate)
    migrate.add_argument("--app", required=True, help="module:attribute naming the App(s)")
    migrate.add_argument(
        "--dry-run", action="store_true", help="only list what would change and what cannot"
    )
    migrate.add_argument("--batch-size", type=_batch_size, default=500, help="rows per transaction")
    migrate.add_argument("--json", action="store_true", help="one JSON object per instance")
    migrate.set_defaults(handler=_migrate)


def _batch_size(text: str) -> int:
    # 0 would end the scan at its first batch with nothing read, and a negative LIMIT fails.
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of rows, at least 1")
    return int(text)


def _migrate(args: argparse.Namespace) -> int:
    sagas = _sagas(args.app)
    engine = make_engine(args.db)
    found: list[InstancePlan] = []
    try:
        for saga_type in sagas.values():
            if args.dry_run:
                with engine.connect() as connection:
                    found.extend(plans(connection, saga_type))
            else:
                found.extend(migrate_all(engine, saga_type, batch_size=args.batch_size))
    finally:
        engine.dispose()
    refused = [item for item in found if item.plan.problem is not None]
    if args.json:
        for item in found:
            print(json.dumps(item.to_json()))
    else:
        groups = Counter(
            (i.saga_type, i.plan.from_version, i.plan.from_state, i.plan.describe()) for i in found
        )
        for (name, version, state, becomes), count in sorted(groups.items()):
            print(f"{name} v{version} {state}: {count} → {becomes}")
        verb = "would migrate" if args.dry_run else "migrated"
        print(f"sagas: {verb} {len(found) - len(refused)}, {len(refused)} cannot be migrated")
    return 1 if refused else 0


def occupied_findings(spec: str, database: str) -> list[Problem]:
    """`graph --check --db`: the states live instances occupy that the sagas of `spec` dropped."""
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            return [
                Problem(finding.kind, f"{saga.saga_type}: {finding.detail}")
                for saga in _sagas(spec).values()
                for finding in saga.check(occupied(connection, saga))
                if finding.kind == "occupied state dropped"
            ]
    finally:
        engine.dispose()


def _sagas(spec: str) -> dict[str, type[Saga[Any]]]:
    return {saga.saga_type: saga for app in load_apps(spec) for saga in app.runtime.sagas}
