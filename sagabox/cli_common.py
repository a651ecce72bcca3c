"""Pieces every `sagabox` subcommand shares: the --db and --broker options, defaults from the
settings, durations, logging and stopping cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy.exc import ArgumentError

from outbox.database import database_url, make_engine
from outbox.urls import mask_secrets
from sagabox.cli_signals import stop_signals
from sagabox.settings import Settings, env_name, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

Groups: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
URL_EXAMPLES = "sqlite:///app.db or postgresql://user@host:5432/dbname"


_loaded: Settings | None = None


def settings(*, reload: bool = False) -> Settings:
    """The settings the command line is built with, read from the environment once per run."""
    global _loaded
    if _loaded is None or reload:
        _loaded = load_settings()
    return _loaded


def setting_help(text: str, field: str) -> str:
    """`text`, then the value in force and the variable that sets it, for `--help`."""
    value = getattr(settings(), field)
    if value is None:
        return f"{text} (env {env_name(field)})"
    return f"{text} (default: {mask_secrets(value)}; env {env_name(field)})"


def database_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add `--db URL`, defaulting to $SAGABOX_DATABASE_URL."""
    default = settings().database_url
    parser.add_argument(
        "--db",
        default=default,
        required=required and default is None,
        metavar="URL",
        help=setting_help(f"database URL, e.g. {URL_EXAMPLES}", "database_url"),
    )


def broker_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add `--broker URL`, defaulting to $SAGABOX_BROKER_URL."""
    default = settings().broker_url
    parser.add_argument(
        "--broker",
        default=default,
        required=required and default is None,
        metavar="URL",
        help=setting_help(
            "broker URL: amqp://user@host:5672//, redis://host/0 or memory://", "broker_url"
        ),
    )


def setting_argument(
    parser: argparse.ArgumentParser, flag: str, field: str, text: str, **options: object
) -> None:
    """Add `flag`, whose default is the settings field `field` ($SAGABOX_<FIELD>)."""
    parser.add_argument(
        flag,
        default=getattr(settings(), field),
        help=setting_help(text, field),
        **options,  # type: ignore[arg-type]
    )


def duration(text: str) -> timedelta:
    """Parse `30s`, `15m`, `12h` or `7d` (an argparse type)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write e.g. 30s, 15m, 12h, 7d"
        )
    try:
        return timedelta(**{_UNITS[match[2]]: float(match[1])})
    except OverflowError:  # argparse turns only ValueError/TypeError into a usage line
        raise argparse.ArgumentTypeError(
            f"{text!r} is longer than a datetime can reach: write at most 999999999d"
        ) from None


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps; every sagabox message already masks passwords."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kombu and amqp quote URLs in some messages; make sure those are masked too.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MaskFilter())


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Call `stop` on SIGTERM or SIGINT, so the work in flight finishes before exiting 0.

    `sagabox.cli.main` installed the handlers before start-up; called from elsewhere (a test, a
    program of yours in its main thread), this installs them now.
    """
    stop_signals.install()
    stop_signals.on_stop(stop)


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        masked = mask_secrets(record.getMessage())
        record.msg, record.args = masked, None
        return True


def check_database_url(text: str, *, creates: bool = False) -> None:
    """Refuse a --db URL that cannot work, saying what a good one looks like, before any
    driver turns it into "invalid literal for int()" or "unable to open database file".

    Only a command that `creates` the database may name a SQLite file that does not exist:
    for any other, SQLite would quietly create an empty file at a mistyped path.
    """
    shown = mask_secrets(text)
    try:
        url = database_url(text)
    except (ArgumentError, ValueError) as exc:
        reason = str(exc)
        if "invalid literal for int()" in reason:
            reason = f"its port {reason.rpartition(':')[2].strip()} is not a number"
        raise ValueError(
            f"--db {shown!r} is not a database URL ({mask_secrets(reason)}): write it as "
            f"{URL_EXAMPLES}"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if url.database.startswith("~"):
            # SQLite opens the path as written: "~" is a folder of that name, not home.
            raise ValueError(
                f"--db {shown}: SQLite does not expand '~' in a path: write it out in full "
                "(sqlite:////home/you/app.db), or relative to the current folder"
            )
        folder = Path(url.database).resolve().parent
        if not folder.is_dir():
            raise ValueError(
                f"--db {shown}: the folder {folder} does not exist (SQLite creates the file, "
                "not its folder): create it, or fix the path (sqlite:///relative/app.db, "
                "sqlite:////absolute/app.db)"
            )
        path = Path(url.database).resolve()
        if path.is_dir():
            raise ValueError(
                f"--db {shown}: {path} is a folder, not a SQLite database file: name the file "
                "in it (sqlite:///folder/app.db)"
            )
        if not creates and not path.exists() and not url.database.startswith("file:"):
            raise ValueError(
                f"--db {shown}: there is no SQLite database at {path}: fix the path, or create "
                "the database with sagabox's tables (sagabox_outbox_messages and the rest) "
                "using `sagabox db upgrade --db URL`"
            )


def with_engine(args: argparse.Namespace, work: Callable[[Engine], int]) -> int:
    """Run `work` on an engine for `--db`, disposed afterwards; return its exit code."""
    engine = make_engine(args.db)
    try:
        return work(engine)
    finally:
        engine.dispose()
