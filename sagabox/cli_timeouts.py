"""`sagabox timeouts list | cancel | reschedule | fire`: pending timeouts, acted on by a person."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine

from outbox import clock
from outbox.operator_log import default_actor
from sagabox.cli_common import Groups, database_argument, duration, with_engine
from sagas.timeout_admin import (
    TimeoutEntry,
    cancel_timeout,
    fire_timeout,
    list_timeouts,
    reschedule_timeout,
)

#: The most timeouts one `list` prints (a bigger number is a typo, and past 64 bits an error).
MAX_LIMIT = 1_000_000


def add_to(groups: Groups) -> None:
    """Register the timeouts subcommands."""
    timeouts = groups.add_parser(
        "timeouts", help="list pending saga timeouts; cancel, reschedule or fire one now"
    )
    actions = timeouts.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="pending timeouts, soonest first")
    database_argument(listing)
    listing.add_argument("--type", dest="saga_type", help="only this saga type's")
    listing.add_argument("--id", dest="correlation_id", help="only this instance's")
    listing.add_argument("--due-within", type=duration, help="only those due within, e.g. 1h")
    listing.add_argument("--limit", type=_limit, default=100, help="at most this many (1 up)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)

    for name, help_text, handler in (
        ("cancel", "stop the saga waiting for it (it never fires)", _cancel),
        ("reschedule", "move it to another time (--at or --in)", _reschedule),
        ("fire", "make it due now: the saga handles it on the relay's next pass", _fire),
    ):
        action = actions.add_parser(name, help=help_text)
        database_argument(action)
        action.add_argument("saga_type", metavar="TYPE")
        action.add_argument("correlation_id", metavar="ID")
        action.add_argument("name", metavar="TIMEOUT", help="the timeout's name (see list)")
        action.add_argument(
            "--actor", default=None, help="who does it, for the log (default: $USER)"
        )
        if name == "reschedule":
            when = action.add_mutually_exclusive_group(required=True)
            when.add_argument(
                "--at", type=_timestamp, help="ISO time with zone, e.g. 2026-12-24T09:00:00+00:00"
            )
            when.add_argument("--in", dest="delay", type=duration, help="from now, e.g. 2h")
        action.set_defaults(handler=handler)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no limit: give a number from 1 to {MAX_LIMIT}"
        )
    return value


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time: write e.g. 2026-12-24T09:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one, e.g. {text}+00:00 for UTC"
        )
    return value


def _line(entry: TimeoutEntry) -> str:
    pending = entry.pending
    repeat = f", every {pending.every}" if pending.every else ""
    return (
        f"{pending.due_at:%Y-%m-%d %H:%M:%S}  {entry.saga_type}  {entry.correlation_id}  "
        f"{entry.name}  (set in {pending.state}{repeat})"
    )


def _list(args: argparse.Namespace) -> int:
    due_before = clock.now() + args.due_within if args.due_within else None

    def work(engine: Engine) -> int:
        with engine.connect() as connection:
            entries = list_timeouts(
                connection,
                saga_type=args.saga_type,
                correlation_id=args.correlation_id,
                due_before=due_before,
                limit=args.limit,
            )
        for entry in entries:
            print(json.dumps(entry.to_json()) if args.json else _line(entry))
        if not entries and not args.json:
            print("no pending timeouts")
        return 0

    return with_engine(args, work)


def _act(args: argparse.Namespace, verb: str, act: Callable[..., TimeoutEntry]) -> int:
    actor = args.actor or default_actor()

    def work(engine: Engine) -> int:
        with engine.begin() as connection:
            entry = act(connection, args.saga_type, args.correlation_id, args.name, actor=actor)
        print(f"{verb}: {_line(entry)} (by {actor})")
        return 0

    return with_engine(args, work)


def _cancel(args: argparse.Namespace) -> int:
    return _act(args, "cancelled", cancel_timeout)


def _fire(args: argparse.Namespace) -> int:
    return _act(args, "due now", fire_timeout)


def _reschedule(args: argparse.Namespace) -> int:
    due_at = args.at if args.at is not None else clock.now() + args.delay

    def move(
        connection: Connection, saga_type: str, correlation_id: str, name: str, *, actor: str
    ) -> TimeoutEntry:
        return reschedule_timeout(connection, saga_type, correlation_id, name, due_at, actor=actor)

    return _act(args, "rescheduled", move)
