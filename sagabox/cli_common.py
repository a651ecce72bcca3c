"""Pieces every `sagabox` subcommand shares: the --db and --broker options, durations, logging
and stopping cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

from outbox.urls import mask_secrets
from relay.broker import BROKER_ENV
from sagabox.app import DATABASE_ENV
from sagabox.cli_signals import stop_signals

Groups: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def database_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add `--db URL`, defaulting to $SAGABOX_DATABASE_URL."""
    default = os.environ.get(DATABASE_ENV)
    parser.add_argument(
        "--db",
        default=default,
        required=required and default is None,
        metavar="URL",
        help="database URL, e.g. sqlite:///app.db or postgresql://user:pw@host/db "
        f"(env {DATABASE_ENV})",
    )


def broker_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add `--broker URL`, defaulting to $SAGABOX_BROKER_URL."""
    default = os.environ.get(BROKER_ENV)
    parser.add_argument(
        "--broker",
        default=default,
        required=required and default is None,
        metavar="URL",
        help="broker URL: amqp://user:pw@host:5672//, redis://host/0 or memory:// "
        f"(env {BROKER_ENV})",
    )


def duration(text: str) -> timedelta:
    """Parse `30s`, `15m`, `12h` or `7d` (an argparse type)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write e.g. 30s, 15m, 12h, 7d"
        )
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


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
