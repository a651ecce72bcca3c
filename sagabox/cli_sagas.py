"""`sagabox sagas list | show | stuck | prune` and `sagabox graph`: where each saga is, how it got
there, what is stuck, and how the messages flow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import Connection, select

from outbox import clock
from outbox.database import make_engine
from sagabox import cli_migrate_sagas, graph
from sagabox.app import load_apps
from sagabox.cli_common import Groups, database_argument, duration
from sagas.queries import SagaSummary, list_sagas, saga_detail, stuck_sagas
from sagas.retention import prune_finished, prune_journal
from sagas.tables import saga_instances


def add_to(groups: Groups) -> None:
    """Register the sagas subcommands."""
    sagas = groups.add_parser("sagas", help="list saga instances, show one, find stuck ones")
    actions = sagas.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="instances, most recently changed first")
    database_argument(listing)
    listing.add_argument("--type", dest="saga_type", help="only this saga type")
    listing.add_argument("--state", help="only instances in this state")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)

    show = actions.add_parser(
        "show", help="one instance: state, data, journal, pending timeouts, unshipped messages"
    )
    database_argument(show)
    show.add_argument("saga_type", metavar="TYPE")
    show.add_argument("correlation_id", metavar="ID")
    show.add_argument(
        "--app", help="module:attribute of the app(s) running it, to draw its diagram (Mermaid)"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    stuck = actions.add_parser(
        "stuck", help="unfinished instances with no transition and no timeout pending for a while"
    )
    database_argument(stuck)
    stuck.add_argument("--older-than", type=duration, required=True, help="e.g. 2h, 3d")
    stuck.add_argument("--json", action="store_true")
    stuck.set_defaults(handler=_stuck)

    prune = actions.add_parser(
        "prune",
        help="delete finished sagas and journal lines of unknown sagas past their retention",
    )
    database_argument(prune)
    prune.add_argument(
        "--older-than",
        type=duration,
        required=True,
        help="e.g. 30d: keep tombstones longer than any message can be late",
    )
    prune.add_argument("--batch-size", type=int, default=500)
    prune.set_defaults(handler=_prune)
    cli_migrate_sagas.add_to(actions)

    graph = groups.add_parser(
        "graph", help="the message flow of a system's sagas and handlers, as Mermaid"
    )
    graph.add_argument("--app", required=True, help="module:attribute naming the App(s)")
    graph.add_argument(
        "--check",
        action="store_true",
        help="exit 1 on cycles between handlers, commands nobody handles, handlers of "
        "messages nobody sends; report long single-consumer event chains",
    )
    graph.add_argument(
        "--db",
        metavar="URL",
        help="with --check: also exit 1 when a saga drops a state live instances occupy",
    )
    graph.set_defaults(handler=_graph)


def _print_summaries(summaries: list[SagaSummary], as_json: bool, empty: str) -> None:
    for summary in summaries:
        if as_json:
            print(json.dumps(summary.to_json()))
        else:
            done = " (finished)" if summary.finished_at else ""
            print(
                f"{summary.saga_type}  {summary.correlation_id}  {summary.state}{done}  "
                f"v{summary.version}  changed {summary.updated_at:%Y-%m-%d %H:%M:%S}  "
                f"(definition v{summary.definition_version})"
            )
    if not summaries and not as_json:
        print(empty)


def _list(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    try:
        with engine.connect() as connection:
            found = list_sagas(
                connection, saga_type=args.saga_type, state=args.state, limit=args.limit
            )
            if not found and args.saga_type is not None:
                _check_saga_type(connection, args.saga_type)
    finally:
        engine.dispose()
    _print_summaries(found, args.json, "no saga instances")
    return 0


def _stuck(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    try:
        with engine.connect() as connection:
            found = stuck_sagas(connection, older_than=clock.now() - args.older_than)
    finally:
        engine.dispose()
    _print_summaries(found, args.json, f"nothing stuck for more than {args.older_than}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    cutoff = clock.now() - args.older_than
    engine = make_engine(args.db)
    counts = {}
    try:
        for name, prune in (("finished sagas", prune_finished), ("journal lines", prune_journal)):
            counts[name] = 0
            while True:  # one short transaction per batch: locks stay short, progress stays
                with engine.begin() as connection:
                    count = prune(connection, older_than=cutoff, batch_size=args.batch_size)
                counts[name] += count
                if count < args.batch_size:
                    break
    finally:
        engine.dispose()
    done = ", ".join(f"{count} {name}" for name, count in counts.items())
    print(f"sagas: pruned {done} from before {cutoff:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def _show(args: argparse.Namespace) -> int:
    engine = make_engine(args.db)
    try:
        with engine.connect() as connection:
            detail = saga_detail(connection, args.saga_type, args.correlation_id)
            if detail is None:
                _check_saga_type(connection, args.saga_type)
    finally:
        engine.dispose()
    if detail is None:
        raise ValueError(
            f"no {args.saga_type} saga has id {args.correlation_id!r}: "
            "`sagabox sagas list --type TYPE` shows the ones there are"
        )
    diagram = _diagram(args.app, args.saga_type, detail.path) if args.app else None
    if args.json:
        print(json.dumps({**detail.to_json(), "mermaid": diagram}, indent=2))
        return 0
    summary = detail.summary
    print(f"{summary.saga_type} {summary.correlation_id}: {summary.state} (v{summary.version})")
    print(f"definition: v{summary.definition_version}")
    if summary.finished_at:
        print(f"finished {summary.finished_at:%Y-%m-%d %H:%M:%S}")
    print(f"data: {json.dumps(detail.data)}")
    print("pending timeouts:" if detail.timeouts else "pending timeouts: none")
    for name, pending in detail.timeouts.items():
        print(f"  {name}: due {pending.due_at:%Y-%m-%d %H:%M:%S}, set in {pending.state}")
    print("not yet shipped:" if detail.unshipped else "not yet shipped: nothing")
    for row in detail.unshipped:
        print(
            f"  {row['type']} → {row['destination']}, due {row['available_at']:%Y-%m-%d %H:%M:%S}"
        )
    print("journal:")
    for entry in detail.journal:
        print(
            f"  {entry['at']:%Y-%m-%d %H:%M:%S}  {entry['trigger']}  "
            f"{entry['from_state'] or '-'} → {entry['to_state'] or '-'}  {entry['outcome']}"
            + (f"  (v{entry['definition_version']})" if entry["definition_version"] else "")
        )
    if diagram:
        print("\n" + diagram, end="")
    return 0


def _check_saga_type(connection: Connection, saga_type: str) -> None:
    """Raise, naming the types there are, if no instance of `saga_type` exists at all: a typo
    must not look like an empty result."""
    types = sorted(
        connection.execute(select(saga_instances.c.saga_type).distinct()).scalars().all()
    )
    if saga_type in types:
        return
    similar = [name for name in types if name.rsplit(".", 1)[-1] == saga_type.rsplit(".", 1)[-1]]
    hint = f"; did you mean {similar[0]!r}?" if similar else ""
    raise ValueError(
        f"no saga of type {saga_type!r} in this database (types there: "
        f"{', '.join(types) or 'none yet'}){hint}"
    )


def _graph(args: argparse.Namespace) -> int:
    flow = graph.build(load_apps(args.app))
    if not args.check:
        print(graph.mermaid(flow), end="")
        return 0
    problems = graph.check(flow)
    for problem in problems:
        print(problem)
    errors = [problem for problem in problems if not problem.smell]
    if args.db:
        dropped = cli_migrate_sagas.occupied_findings(args.app, args.db)
        for finding in dropped:
            print(finding)
        errors.extend(dropped)
    print(f"{len(errors)} errors, {len(problems) - len(errors)} smells")
    return 1 if errors else 0


def _diagram(spec: str, saga_type: str, path: list[str]) -> str:
    sagas: dict[str, Any] = {
        saga.saga_type: saga for app in load_apps(spec) for saga in app.runtime.sagas
    }
    if saga_type not in sagas:
        raise ValueError(f"{spec} runs no saga of type {saga_type!r} (it runs {sorted(sagas)})")
    return str(sagas[saga_type].mermaid(path=path))
