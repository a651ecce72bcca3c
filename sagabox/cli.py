"""The `sagabox` command line: one subcommand group per concern, errors as one readable line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# Only what installing the signal handlers needs is imported up here: the rest of sagabox (and
# SQLAlchemy, kombu, pydantic) loads after them, so SIGTERM during start-up exits cleanly.
from sagabox import __version__
from sagabox.cli_signals import stop_signals

if TYPE_CHECKING:
    from sagabox.cli_common import Groups

Handler = Callable[[argparse.Namespace], int]

#: A module the base install lacks → the extra that brings it.
EXTRAS = {
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "prometheus_client": "metrics",
    "opentelemetry": "tracing",
    "freezegun": "demo",
}


def missing_extra_hint(exc: ModuleNotFoundError) -> str | None:
    """`pip install 'sagabox[EXTRA]'` for a module one of sagabox's extras provides."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    return None if extra is None else f"pip install 'sagabox[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    stop_signals.install()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # Ctrl-C in a one-shot command (a daemon stops gracefully instead): its transaction
        # has rolled back on the way out; one line, not a traceback, and the shell's code.
        print("sagabox: interrupted; nothing it had not committed was kept", file=sys.stderr)
        return 130
    finally:
        stop_signals.restore()


def _run(argv: Sequence[str] | None) -> int:
    # After the signal handlers: these pull in SQLAlchemy, kombu and pydantic.
    from amqp.exceptions import AMQPError
    from kombu.exceptions import KombuError
    from sqlalchemy.exc import SQLAlchemyError

    from outbox.errors import SagaboxError
    from outbox.urls import mask_secrets
    from sagabox.cli_common import check_database_url
    from sagabox.settings import SettingsError

    try:
        parser = build_parser()
    except SettingsError as exc:  # a bad $SAGABOX_* value: one line at start, like a bad flag
        print(f"sagabox: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    undecodable = _undecodable_argument(args)
    if undecodable is not None:
        print(f"sagabox: error: {undecodable}", file=sys.stderr)
        return 1
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    if not getattr(args, "daemon", False):
        # A one-shot command keeps the default: a signal ends it where it is.
        stop_signals.restore()
    try:
        if getattr(args, "db", None):
            check_database_url(args.db, creates=getattr(args, "creates_database", False))
        return handler(args)
    except (KombuError, AMQPError, ConnectionError) as exc:
        # `--once` has no outage to wait out: say what failed, in one line, and exit. A refused
        # socket is the broker's: database drivers raise their own errors, not OSError.
        broker = mask_secrets(getattr(args, "broker", None) or "the broker")
        print(
            f"sagabox: error: {broker}: {mask_secrets(one_line(exc))} (is it running, and are "
            "--broker and its credentials right?)",
            file=sys.stderr,
        )
        return 1
    except (SagaboxError, SQLAlchemyError, OSError, ValueError, ImportError) as exc:
        if isinstance(exc, ModuleNotFoundError) and (hint := missing_extra_hint(exc)):
            print(f"sagabox: error: this needs {exc.name}, from an extra: {hint}", file=sys.stderr)
            return 1
        # Driver errors can quote the URL they failed on: never print its password.
        print(f"sagabox: error: {mask_secrets(one_line(exc))}", file=sys.stderr)
        return 1


def _undecodable_argument(args: argparse.Namespace) -> str | None:
    """What is wrong with the first argument that is not valid UTF-8, or None.

    The shell hands over bytes; Python keeps undecodable ones as lone surrogates, which no
    database driver can send: without this, the command fails with a codec's complaint.
    """
    for name, value in vars(args).items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            return (
                f"argument {name} ('{shown[:80]}') is not valid UTF-8 text: retype it, or "
                "check the terminal's encoding (locale)"
            )
    return None


def one_line(exc: BaseException) -> str:
    """The gist of an error on one line: the driver's own message, without SQLAlchemy's
    background link or a multi-line server notice."""
    from sqlalchemy.exc import DBAPIError

    from outbox.database import missing_table_hint

    hint = missing_table_hint(exc)
    if hint is not None:  # the driver's own words would not say which command fixes it
        return hint
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return "; ".join(lines) or type(inner).__name__


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with its defaults read from the settings as they are now."""
    from sagabox import (  # after the signal handlers
        cli_dlq,
        cli_run,
        cli_sagas,
        cli_timeouts,
        cli_web,
    )
    from sagabox.cli_common import settings

    settings(reload=True)
    parser = argparse.ArgumentParser(prog="sagabox", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sagabox {__version__}")
    groups = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_db(groups)
    cli_run.add_to(groups)
    cli_dlq.add_to(groups)
    cli_sagas.add_to(groups)
    cli_timeouts.add_to(groups)
    cli_web.add_to(groups)
    return parser


def _add_db(groups: Groups) -> None:
    from sagabox.cli_common import database_argument  # after the signal handlers

    db = groups.add_parser("db", help="create and upgrade sagabox's tables")
    actions = db.add_subparsers(title="actions", metavar="ACTION", required=True)

    up = actions.add_parser("upgrade", help="apply sagabox's migrations (to head by default)")
    database_argument(up)
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.add_argument(
        "--sql", action="store_true", help="print the SQL instead of running it, for review"
    )
    up.set_defaults(handler=_db_upgrade, creates_database=True)

    cur = actions.add_parser("current", help="print the sagabox revision the database is at")
    database_argument(cur)
    cur.set_defaults(handler=_db_current)

    notify = actions.add_parser(
        "notify",
        help="show, or turn on or off, the outbox's NOTIFY trigger (PostgreSQL)",
        description="The trigger wakes sleeping relays at once; off, writers commit faster "
        "side by side and relays find new rows by polling (relay --poll-interval).",
    )
    database_argument(notify)
    notify.add_argument("state", nargs="?", choices=["on", "off"], help="omit to show it")
    notify.set_defaults(handler=_db_notify)


def _db_upgrade(args: argparse.Namespace) -> int:
    from outbox.urls import mask_secrets  # after the signal handlers
    from sagabox import migrate

    if args.sql:
        sys.stdout.write(migrate.upgrade_sql(args.db, args.revision))
        return 0
    migrate.upgrade(args.db, args.revision)
    print(f"sagabox tables at {args.revision} on {mask_secrets(args.db)}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from outbox.database import make_engine  # after the signal handlers
    from sagabox import migrate

    engine = make_engine(args.db)
    try:
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current == head:
        print(f"{current} (head)")
    else:
        print(f"{current or 'none'} (behind head {head}: run `sagabox db upgrade`)")
    return 0


def _db_notify(args: argparse.Namespace) -> int:
    from outbox.database import make_engine  # after the signal handlers
    from outbox.notify import notify_trigger, set_notify_trigger

    engine = make_engine(args.db)
    try:
        with engine.begin() as connection:
            if args.state is not None:
                set_notify_trigger(connection, enabled=args.state == "on")
            state = notify_trigger(connection)
    finally:
        engine.dispose()
    if state is None and engine.dialect.name == "postgresql":
        print("none: no outbox NOTIFY trigger here (run `sagabox db upgrade`)")
    elif state is None:
        print(f"none: {engine.dialect.name} has no NOTIFY; relays poll (relay --poll-interval)")
    elif state:
        print("on: relays LISTEN and wake at each commit that writes outbox rows")
    else:
        print("off: relays poll (relay --poll-interval); `sagabox db notify on` turns it on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
