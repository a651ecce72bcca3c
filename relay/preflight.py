"""Start-up checks for a daemon: a setting that can never work stops it with one line.

An unknown broker scheme, a broker that refuses the login or the virtual host, a database that
refuses the login or lacks sagabox's tables are `Misconfigured`: the process exits non-zero at
once, instead of logging and retrying forever while a liveness probe passes. A broker or a
database that is not reachable yet is waited for, with backoff, as after a good start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kombu import Connection
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from outbox.errors import SagaboxError
from outbox.tables import dead_letters, outbox_messages
from outbox.urls import mask_secrets
from relay.backoff import Backoff
from relay.broker import BROKER_ENV, connect, describe

log = logging.getLogger("sagabox.relay")

#: AMQP reply codes that mean the broker will never let these settings in.
_LOGIN_REFUSED = {403: "refused the login", 530: "refused the virtual host"}
#: What PostgreSQL says when the URL's user, password or database is wrong.
_DATABASE_REFUSED = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "unable to open database file",
)


class Misconfigured(SagaboxError):
    """sagabox cannot start with these settings; the message says what to fix."""


class _NotYet(Exception):
    """The service is not reachable (yet): wait and check again."""


def check_broker_url(url: str) -> None:
    """Refuse a broker URL whose scheme kombu has no transport for, or whose client is missing."""
    scheme = url.partition("://")[0] if "://" in url else url
    try:
        Connection(url).transport  # noqa: B018 - resolves the scheme, imports its client library
    except KeyError:
        raise Misconfigured(
            f"unknown broker scheme {scheme!r} in {describe(url)}: use amqp:// (RabbitMQ), "
            f"redis:// or memory:// (set --broker or ${BROKER_ENV})"
        ) from None
    except ImportError as exc:
        raise Misconfigured(f"the {scheme}:// broker needs a library: {exc}") from exc


def check_broker(url: str, *, connect_timeout: float = 10.0) -> None:
    """Log in to the broker once; `Misconfigured` if it refuses, `_NotYet` if unreachable."""
    connection = connect(url, connect_timeout=connect_timeout)
    try:
        connection.ensure_connection(max_retries=0)
    except Exception as exc:
        refused = _LOGIN_REFUSED.get(getattr(exc, "reply_code", 0))
        if refused:
            raise Misconfigured(
                f"the broker at {describe(url)} {refused}: check the user, password and "
                f"virtual host in --broker or ${BROKER_ENV}"
            ) from exc
        raise _NotYet(f"broker {describe(url)}: {mask_secrets(exc)}") from exc
    finally:
        connection.release()


def check_database(engine: Engine) -> None:
    """Look for sagabox's tables; `Misconfigured` if missing or refused, `_NotYet` if down."""
    where = mask_secrets(engine.url)
    try:
        with engine.connect() as connection:
            names = set(inspect(connection).get_table_names())
    except OperationalError as exc:
        text = str(exc.orig)
        if any(phrase in text for phrase in _DATABASE_REFUSED):
            first = text.strip().splitlines()[0]
            raise Misconfigured(
                f"the database at {where} refused the connection ({mask_secrets(first)}): check "
                "the URL given with --db or $SAGABOX_DATABASE_URL"
            ) from exc
        raise _NotYet(f"database {where}: {mask_secrets(text.splitlines()[0])}") from exc
    missing = sorted({outbox_messages.name, dead_letters.name} - names)
    if missing:
        raise Misconfigured(
            f"the database at {where} lacks sagabox's tables ({', '.join(missing)}): create "
            "them with `sagabox db upgrade` (or your service's Alembic migrations)"
        )


def wait_until_ready(
    engine: Engine,
    broker_url: str,
    *,
    stopping: threading.Event,
    backoff: Backoff | None = None,
    wait: bool = True,
) -> bool:
    """Check the settings, waiting for services that are not up yet; False if stopped first.

    Raises `Misconfigured` at the first setting that can never work. With `wait=False` (a
    `--once` run, which has no outage to wait out) a service that is not reachable raises the
    error that said so instead.
    """
    check_broker_url(broker_url)
    backoff = backoff or Backoff(initial=0.5, maximum=10.0)
    checks: list[Callable[[], None]] = [
        lambda: check_database(engine),
        lambda: check_broker(broker_url),
    ]
    while checks:
        try:
            checks[0]()
        except _NotYet as exc:
            if not wait:
                raise (exc.__cause__ or exc) from None
            delay = backoff.next_delay()
            log.warning("relay: %s is not reachable yet; checking again in %.1f s", exc, delay)
            if stopping.wait(delay):
                return False
            continue
        checks.pop(0)
        backoff.reset()
    return not stopping.is_set()
