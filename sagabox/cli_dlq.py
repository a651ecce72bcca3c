"""`sagabox dlq ...` (prune too) and `sagabox inbox prune`: looking after dead letters and inbox."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from outbox import clock
from outbox.dead_letters import (
    DeadLetter,
    discard_dead_letter,
    get_dead_letter,
    list_dead_letters,
    replay_dead_letter,
)
from outbox.errors import OutboxError
from outbox.inbox import prune_inbox
from outbox.retention import prune_dead_letters
from sagabox.cli_common import Groups, database_argument, duration, with_engine


def add_to(groups: Groups) -> None:
    """Register the dlq and inbox subcommands."""
    dlq = groups.add_parser("dlq", help="list, show, replay or discard dead letters")
    actions = dlq.add_subparsers(title="actions", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the dead letters, oldest first")
    database_argument(listing)
    listing.add_argument("--endpoint", help="only this endpoint's")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one dead letter in full: headers, body, traceback")
    database_argument(show)
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    replay = actions.add_parser(
        "replay", help="send dead letters back to their endpoint (after fixing the cause)"
    )
    database_argument(replay)
    replay.add_argument("ids", type=int, nargs="+", metavar="ID")
    replay.set_defaults(handler=_replay)

    discard = actions.add_parser("discard", help="delete dead letters for good")
    database_argument(discard)
    discard.add_argument("ids", type=int, nargs="+", metavar="ID")
    discard.set_defaults(handler=_discard)

    prune_letters = actions.add_parser(
        "prune", help="delete dead letters nobody replayed or discarded within a retention"
    )
    database_argument(prune_letters)
    prune_letters.add_argument("--older-than", type=duration, required=True, help="e.g. 90d")
    prune_letters.add_argument("--batch-size", type=int, default=500)
    prune_letters.set_defaults(handler=_prune_dead_letters)

    inbox = groups.add_parser("inbox", help="the inbox of processed message ids")
    inbox_actions = inbox.add_subparsers(title="actions", metavar="ACTION", required=True)
    prune = inbox_actions.add_parser(
        "prune", help="delete ids processed before a retention period, in small batches"
    )
    database_argument(prune)
    prune.add_argument("--older-than", type=duration, required=True, help="e.g. 7d")
    prune.add_argument("--batch-size", type=int, default=1000)
    prune.set_defaults(handler=_prune)


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "endpoint": letter.endpoint,
        "message_id": str(letter.message_id) if letter.message_id else None,
        "type": letter.type,
        "attempts": letter.attempts,
        "first_failed_at": letter.first_failed_at.isoformat(),
        "last_failed_at": letter.last_failed_at.isoformat(),
        "reason": letter.reason,
    }


def _list(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        with engine.connect() as connection:
            letters = list_dead_letters(connection, endpoint=args.endpoint, limit=args.limit)
        for letter in letters:
            if args.json:
                print(json.dumps(_summary(letter)))
            else:
                print(
                    f"{letter.id:>6}  {letter.last_failed_at:%Y-%m-%d %H:%M:%S}  "
                    f"{letter.endpoint}  {letter.type or '?'}  {letter.attempts} tries  "
                    f"{letter.reason}"
                )
        if not letters and not args.json:
            print("no dead letters")
        return 0

    return with_engine(args, work)


def _show(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        with engine.connect() as connection:
            letter = get_dead_letter(connection, args.id)
        details = {
            **_summary(letter),
            "content_type": letter.content_type,
            "headers": letter.headers,
            "body": letter.body.decode("utf-8", errors="backslashreplace"),
            "error": letter.error,
            "traceback": letter.traceback,
        }
        if args.json:
            print(json.dumps(details, indent=2))
        else:
            for key, value in details.items():
                if key == "traceback" and value:
                    print(f"traceback:\n{value}")
                else:
                    print(f"{key}: {value}")
        return 0

    return with_engine(args, work)


def _replay(args: argparse.Namespace) -> int:
    def one(engine: Engine, letter_id: int) -> str:
        with engine.begin() as connection:
            message_id = replay_dead_letter(connection, letter_id)
        return f"message {message_id} is back in the outbox"

    return with_engine(args, lambda engine: _each(engine, args.ids, one, "replayed"))


def _discard(args: argparse.Namespace) -> int:
    def one(engine: Engine, letter_id: int) -> str:
        with engine.begin() as connection:
            discard_dead_letter(connection, letter_id)
        return "discarded"

    return with_engine(args, lambda engine: _each(engine, args.ids, one, "discarded"))


def _each(engine: Engine, ids: list[int], one: Callable[[Engine, int], str], done: str) -> int:
    """Act on each letter in its own transaction: one that cannot be acted on (not found, not
    replayable) is reported and keeps its letter, and the rest are still tried; exit 1 if any
    was not."""
    failed = 0
    for letter_id in ids:
        try:
            print(f"dead letter {letter_id}: {one(engine, letter_id)}")
        except OutboxError as exc:
            failed += 1
            print(f"dead letter {letter_id}: not {done}: {exc}", file=sys.stderr)
    if failed and len(ids) > 1:
        print(f"{failed} of {len(ids)} dead letters not {done}", file=sys.stderr)
    return 1 if failed else 0


def _prune_dead_letters(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        cutoff = clock.now() - args.older_than
        total = 0
        while True:
            with engine.begin() as connection:
                count = prune_dead_letters(
                    connection, older_than=cutoff, batch_size=args.batch_size
                )
            total += count
            if count < args.batch_size:
                break
        print(f"dlq: pruned {total} dead letters last failed before {cutoff:%Y-%m-%d %H:%M:%S} UTC")
        return 0

    return with_engine(args, work)


def _prune(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        cutoff = clock.now() - args.older_than
        total = 0
        while True:
            with engine.begin() as connection:
                count = prune_inbox(connection, older_than=cutoff, batch_size=args.batch_size)
            total += count
            if count < args.batch_size:
                break
        print(f"inbox: pruned {total} ids processed before {cutoff:%Y-%m-%d %H:%M:%S} UTC")
        return 0

    return with_engine(args, work)
