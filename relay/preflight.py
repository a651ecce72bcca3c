"""Start-up checks for the relay and the worker: a setting that can never work stops them with
one line, a service that is not up yet is waited for.

An unknown broker scheme, a broker that refuses the login or the virtual host, a database that
refuses the login or lacks sagabox's tables are `Misconfigured`: the process exits non-zero at
once, instead of logging and retrying forever while a liveness probe passes. A broker or a
database that is not reachable yet is an outage, not a mistake: each check returns why, and the
caller waits, with backoff, as after a good start. Both daemons use these checks alone, so they
say the same thing about the same mistake.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from kombu import Connection
from sqlalchemy import Engine, Table, inspect
from sqlalchemy.exc import SQLAlchemyError

from outbox.errors import Misconfigured, MissingTables
from outbox.tables import dead_letters, inbox_messages, outbox_messages
from outbox.urls import mask_secrets
from relay.backoff import Backoff
from relay.broker import BROKER_ENV, REFUSED, broker_errors, connect, describe

__all__ = [
    "RELAY_TABLES",
    "WORKER_TABLES",
    "BrokerMisconfigured",
    "Misconfigured",
    "MissingTables",
    "check_broker",
    "check_broker_scheme",
    "check_database",
    "wait_until_ready",
]

log = logging.getLogger("sagabox.relay")

#: What the relay reads and writes, and what a worker does besides (its inbox).
RELAY_TABLES = (outbox_messages, dead_letters)
WORKER_TABLES = (outbox_messages, inbox_messages, dead_letters)

#: What PostgreSQL and SQLite say when the URL's user, password, database or file is wrong.
_DATABASE_REFUSED = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "unable to open database file",
)


class BrokerMisconfigured(Misconfigured):
    """The broker URL cannot work as given: fix it, retrying will not help."""


def check_broker_scheme(url: str, *, connect_timeout: float = 10.0) -> Connection:
    """A connection (not opened) for `url`; `BrokerMisconfigured` if kombu has no transport for
    its scheme or the transport's client library is missing."""
    scheme = url.partition("://")[0] if "://" in url else url
    try:
        return connect(url, connect_timeout=connect_timeout)
    except (KeyError, ImportError, AttributeError, ValueError) as exc:
        # kombu names an unknown scheme with a KeyError, and a transport whose client library
        # is missing with an ImportError or (redis) an AttributeError at import.
        raise BrokerMisconfigured(
            f"unknown broker scheme {scheme!r} in {describe(url)} ({_reason(exc)}): use "
            f"amqp:// (RabbitMQ), memory:// or redis:// (after `pip install redis`); set "
            f"--broker or ${BROKER_ENV}"
        ) from exc


def check_broker(url: str, *, connect_timeout: float = 10.0) -> str | None:
    """Log in to the broker once: None if that worked, a sentence saying why not if it cannot be
    reached now
    (wait and check again), `BrokerMisconfigured` saying what to fix if it never will."""
    connection = check_broker_scheme(url, connect_timeout=connect_timeout)
    try:
        connection.ensure_connection(max_retries=0)  # the caller waits and checks again
    except REFUSED as exc:
        raise BrokerMisconfigured(
            f"the broker at {describe(url)} refused the login ({_reason(exc)}): check the user, "
            f"password and virtual host in --broker or ${BROKER_ENV}, and the user's "
            "permissions on the broker"
        ) from exc
    except broker_errors(connection) as exc:
        return f"the broker at {describe(url)} is not reachable yet ({_reason(exc)})"
    finally:
        with contextlib.suppress(*broker_errors(connection)):
            connection.release()
    return None


def check_database(engine: Engine, tables: Iterable[Table] = WORKER_TABLES) -> str | None:
    """Look for sagabox's `tables`: None if present, why not if the database cannot be reached
    now, `Misconfigured` if it refuses the login and `MissingTables` if it lacks them."""
    where = mask_secrets(engine.url.render_as_string(hide_password=True))
    try:
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
    except SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip()
        first = mask_secrets(text.splitlines()[0] if text else type(exc).__name__)
        if any(phrase in text for phrase in _DATABASE_REFUSED):
            raise Misconfigured(
                f"the database at {where} refused the connection ({first}): check the URL "
                "given with --db or $SAGABOX_DATABASE_URL"
            ) from exc
        return f"the database at {where} is not reachable yet ({first})"
    missing = sorted(table.name for table in tables if table.name not in present)
    if missing:
        raise MissingTables(
            f"the database at {where} lacks sagabox's tables ({', '.join(missing)}): create "
            "them with `sagabox db upgrade --db URL` (or your service's Alembic migrations), or "
            "check that --db names the right database"
        )
    return None


def wait_until_ready(
    engine: Engine,
    broker_url: str,
    *,
    stopping: threading.Event,
    backoff: Backoff | None = None,
    wait: bool = True,
    tables: Iterable[Table] = RELAY_TABLES,
    who: str = "relay",
) -> bool:
    """Check the settings, waiting for services that are not up yet; False if stopped first.

    Raises `Misconfigured` at the first setting that can never work. With `wait=False` (a
    `--once` run, which has no outage to wait out) a service that is not reachable raises
    `Misconfigured` saying so instead.
    """
    backoff = backoff or Backoff(initial=0.5, maximum=10.0)
    wanted = tuple(tables)
    checks: list[Callable[[], str | None]] = [
        lambda: check_database(engine, wanted),
        lambda: check_broker(broker_url),
    ]
    # A wrong broker scheme is known without any connection: say it before waiting for a database.
    check_broker_scheme(broker_url)
    while checks:
        not_yet = checks[0]()
        if not_yet is None:
            checks.pop(0)
            backoff.reset()
            continue
        if not wait:
            raise Misconfigured(f"{not_yet}: is it running?")
        delay = backoff.next_delay()
        log.warning("%s: %s; checking again in %.1f s", who, not_yet, delay)
        if stopping.wait(delay):
            return False
    return not stopping.is_set()


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return mask_secrets(text.strip() or type(exc).__name__)
