"""`sagabox relay` and `sagabox worker`: the two long-running processes."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from outbox.database import make_engine
from outbox.urls import mask_secrets
from relay.daemon import Relay
from relay.observe import NOOP
from sagabox.app import load_app
from sagabox.cli_common import (
    Groups,
    broker_argument,
    database_argument,
    duration,
    on_stop_signals,
    setting_argument,
    setup_logging,
)
from sagabox.demo_catalog import DEMO_EXTRA, EXAMPLES

if TYPE_CHECKING:
    from sagabox.metrics import Metrics


def add_to(groups: Groups) -> None:
    """Register the relay and worker subcommands."""
    relay = groups.add_parser(
        "relay", help="ship outbox rows to the broker (a daemon; SIGTERM stops it cleanly)"
    )
    database_argument(relay)
    broker_argument(relay)
    relay.add_argument("--once", action="store_true", help="ship what is due now, then exit")
    setting_argument(
        relay, "--batch-size", "relay_batch_size", "rows per transaction", type=int, metavar="N"
    )
    setting_argument(
        relay,
        "--poll-interval",
        "relay_poll_interval",
        "seconds between polls (safety net)",
        type=float,
        metavar="SECONDS",
    )
    relay.add_argument(
        "--no-listen", action="store_true", help="poll only, without PostgreSQL LISTEN/NOTIFY"
    )
    setting_argument(relay, "--exchange", "exchange", "topic exchange name", metavar="NAME")
    relay.add_argument(
        "--max-attempts",
        type=int,
        default=10,
        metavar="N",
        help="tries of a row the broker does not take before it becomes a dead letter (10)",
    )
    relay.add_argument(
        "--retry-delay",
        type=duration,
        default=timedelta(seconds=5),
        metavar="DURATION",
        help="wait before a row's second try, doubling up to 64 times (default 5s)",
    )
    setting_argument(
        relay, "--log-level", "log_level", "debug, info, warning or error", metavar="LEVEL"
    )
    _metrics_argument(relay)
    relay.set_defaults(handler=_relay, daemon=True)

    worker = groups.add_parser(
        "worker", help="consume an app's queue and run its sagas and handlers"
    )
    worker.add_argument("--app", required=True, help="the App to serve, as module:attribute")
    worker.add_argument(
        "--endpoint", help="which endpoint, when --app names a function returning several"
    )
    database_argument(worker, required=False)
    broker_argument(worker, required=False)
    worker.add_argument("--once", action="store_true", help="process what waits, then exit")
    setting_argument(
        worker,
        "--prefetch",
        "worker_prefetch",
        "messages in flight at most (raised to twice --batch-size when batching)",
        type=int,
        metavar="N",
    )
    setting_argument(
        worker,
        "--batch-size",
        "worker_batch_size",
        "handle up to N waiting messages per transaction (each still deduplicated on its "
        "own; a failing batch is redone one by one)",
        type=int,
        metavar="N",
    )
    setting_argument(
        worker,
        "--batch-wait",
        "worker_batch_wait",
        "how long a partial batch waits for one more message",
        type=float,
        metavar="SECONDS",
    )
    setting_argument(
        worker, "--log-level", "log_level", "debug, info, warning or error", metavar="LEVEL"
    )
    _metrics_argument(worker)
    worker.set_defaults(handler=_worker, daemon=True)

    demo = groups.add_parser(
        "demo", help="play an example with simulated time and print its timeline"
    )
    demo.add_argument("name", nargs="?", default="loan_request", choices=EXAMPLES)
    demo.add_argument(
        "--db", default=None, metavar="URL", help="database (default: a temporary SQLite file)"
    )
    demo.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="a real broker (amqp://...): run the relay and one worker per endpoint as "
        "processes, with a day lasting --day-seconds (default: simulated time, in-process)",
    )
    demo.add_argument(
        "--day-seconds", type=float, default=4.0, help="how long a day lasts with --broker"
    )
    demo.set_defaults(handler=_demo, creates_database=True)


def _metrics_argument(parser: argparse.ArgumentParser) -> None:
    setting_argument(
        parser,
        "--metrics-port",
        "metrics_port",
        "serve Prometheus metrics on http://HOST:PORT/metrics (needs sagabox[metrics])",
        type=int,
        metavar="PORT",
    )
    setting_argument(
        parser, "--metrics-host", "metrics_host", "the address metrics listen on", metavar="HOST"
    )


def _serve_metrics(args: argparse.Namespace, engine: Engine) -> Metrics | None:
    if args.metrics_port is None:
        return None
    from sagabox.metrics import Metrics  # the optional extra

    metrics = Metrics(engine)
    server, _thread = metrics.serve(args.metrics_port, args.metrics_host)
    logging.getLogger("sagabox").info(
        "metrics on http://%s:%d/metrics", args.metrics_host, server.server_port
    )
    return metrics


def _relay(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.metrics_port is not None:
        # A missing extra is a flag that can never work: name its pip line before the checks.
        import sagabox.metrics  # noqa: F401
    # No ping per checkout: a batch on a dropped connection rolls back and is retried after a
    # short backoff, on fresh connections; the ping cost every batch two round trips.
    engine = make_engine(args.db)
    relay = Relay(
        engine,
        args.broker,
        exchange=args.exchange,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        listen=not args.no_listen,
        max_attempts=args.max_attempts,
        retry_delay=args.retry_delay,
    )
    on_stop_signals(relay.stop)  # from here on a signal lets the batch in flight finish
    try:
        # Settings that can never work raise `Misconfigured`: `main` prints it as one line.
        if not relay.check_settings(wait=not args.once):
            return 0  # stopped while waiting for the database or the broker
        relay.observer = _serve_metrics(args, engine) or NOOP
        if args.once:
            relay.drain()
            stats = relay.stats
            print(
                f"relay: shipped {stats.published} messages to {mask_secrets(args.broker)}"
                + (f", kept {stats.retried} for a retry" if stats.retried else "")
                + (f", dead-lettered {stats.dead_lettered}" if stats.dead_lettered else "")
            )
        else:
            relay.run()
    finally:
        relay.close()
        engine.dispose()
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        # The simulated clock is freezegun's: imported only for the demo, never at start.
        from sagabox.demo import run_demo
    except ModuleNotFoundError as exc:
        raise ImportError(f"sagabox demo needs {exc.name}: {DEMO_EXTRA}") from exc
    return run_demo(args.name, database=args.db, broker=args.broker, day_seconds=args.day_seconds)


def _worker(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    app = load_app(args.app, args.endpoint)
    app.configure(database=args.db, broker=args.broker)
    app.metrics = _serve_metrics(args, app.engine)
    worker = app.worker(
        prefetch=args.prefetch, batch_size=args.batch_size, batch_wait=args.batch_wait
    )
    try:
        if args.once:
            worker.check()  # as `run` does: what can never work fails here, in one line
            processed = worker.drain()
            print(f"worker: processed {processed} messages; {worker.stats}", file=sys.stdout)
        else:
            on_stop_signals(worker.stop)
            worker.run()
    finally:
        app.engine.dispose()
    return 0
