"""`sagabox demo NAME --db URL --broker amqp://...`: the example as real processes.

One `sagabox relay` and one `sagabox worker` per endpoint run as separate processes against the
given database and broker, while this process plays the scenario's requests and prints the
timeline. Time is real but compressed: a day lasts `day_seconds` (the examples read their units
from $SAGABOX_DEMO_DAY_SECONDS), so a week of reminders takes seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from kombu import Connection
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outbox import clock
from outbox.tables import inbox_messages, outbox_messages
from outbox.urls import mask_secrets
from sagabox import migrate
from sagabox.app import App
from sagabox.demo import Timeline, duration_text, print_final
from sagabox.demo_catalog import examples_package, load_scenario
from sagabox.testing import Shipped, open_tap, read_tap

CHECKOUT = Path(__file__).resolve().parent.parent
#: How long the system must look idle before a step counts as settled.
QUIET_POLLS = 4
POLL = 0.05


class LiveStage:
    """The `Scene` of a demo whose endpoints run as processes."""

    def __init__(
        self,
        apps: list[App],
        tap: Any,
        queues: list[Any],
        timeline: Timeline,
        shipped: list[Shipped],
        out: TextIO,
    ) -> None:
        self._apps = apps
        self._tap = tap
        self._queues = queues
        self._timeline = timeline
        self._shipped = shipped
        self._out = out
        self._engine = apps[0].engine

    def app(self, name: str) -> App:
        return next(app for app in self._apps if app.name == name)

    def say(self, text: str) -> None:
        print(f"\n{clock.now():%a %d %b %H:%M:%S}  {text}", file=self._out)

    @contextmanager
    def request(self, text: str) -> Iterator[Session]:
        self.say(f"▶ {text}")
        with Session(self._engine) as session, session.begin():
            yield session
        self.settle()

    def advance(self, delta: timedelta) -> None:
        # The scenario's durations are already in the examples' compressed units.
        day = float(os.environ["SAGABOX_DEMO_DAY_SECONDS"])
        story = delta * (86400 / day)
        print(
            f"\n── {duration_text(story)} later ({delta.total_seconds():g} s here) ──",
            file=self._out,
        )
        deadline = time.monotonic() + delta.total_seconds()
        while time.monotonic() < deadline:
            self._look()
            time.sleep(POLL)
        self.settle()

    def rows(self, table: Any) -> list[Any]:
        with self._engine.connect() as connection:
            return list(connection.execute(select(table)))

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until nothing is due, queued or being handled for a few polls in a row."""
        quiet, last, deadline = 0, None, time.monotonic() + timeout
        while quiet < QUIET_POLLS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the system did not settle within {timeout:g} s")
            time.sleep(POLL)
            self._look()
            snapshot = self._snapshot()
            quiet = quiet + 1 if snapshot == last and snapshot[0] == snapshot[1] == 0 else 0
            last = snapshot

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Block until every endpoint's queue has its worker consuming."""
        deadline = time.monotonic() + timeout
        while any(q.queue_declare(passive=True).consumer_count == 0 for q in self._queues):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not start consuming within {timeout:g} s")
            time.sleep(POLL)

    def _snapshot(self) -> tuple[int, int, int]:
        with self._engine.connect() as connection:
            due = connection.execute(
                select(func.count())
                .select_from(outbox_messages)
                .where(outbox_messages.c.available_at <= clock.now())
            ).scalar_one()
            handled = connection.execute(select(func.count()).select_from(inbox_messages))
            handled_count = handled.scalar_one()
        waiting = sum(queue.queue_declare(passive=True).message_count for queue in self._queues)
        return int(due), int(waiting), int(handled_count)

    def _look(self) -> None:
        self._shipped.extend(read_tap(self._tap, self._apps[0].registry))
        self._timeline()


def run_live_demo(name: str, *, database: str, broker: str, day_seconds: float, out: TextIO) -> int:
    """Run example `name` as processes on `database` and `broker`; return 0."""
    os.environ["SAGABOX_DEMO_DAY_SECONDS"] = str(day_seconds)  # read when examples import
    scenario = load_scenario(name)
    migrate.upgrade(database)
    apps: list[App] = scenario.apps()
    for app in apps:
        app.configure(database=database, broker=broker)
    engine = apps[0].engine
    scenario.business.create_all(engine)
    print(f"sagabox demo: {scenario.TITLE}", file=out)
    print(
        f"(real processes: a relay and {len(apps)} workers on {mask_secrets(database)} and "
        f"{mask_secrets(broker)}; a day lasts {day_seconds:g} s)",
        file=out,
    )
    processes: list[subprocess.Popen[bytes]] = []
    with Connection(broker) as connection:
        channel = connection.channel()
        # Declared before anything is sent, so no command waits for its worker to start.
        queues = [app.worker().queue()(channel) for app in apps]
        for queue in queues:
            queue.declare()
        tap = open_tap(channel, apps[0].exchange, "demo", auto_delete=True)
        path = [str(CHECKOUT), os.environ.get("PYTHONPATH", "")]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        common = ["--db", database, "--broker", broker, "--log-level", "warning"]
        processes.append(_spawn(["relay", *common, "--poll-interval", "0.2"], environment))
        for app in apps:
            spec = f"{examples_package()}.{name}.apps:apps"
            worker = ["worker", "--app", spec, "--endpoint", app.name, *common]
            processes.append(_spawn(worker, environment))
        try:
            shipped: list[Shipped] = []
            timeline = Timeline(engine, apps, shipped, out)
            stage = LiveStage(apps, tap, queues, timeline, shipped, out)
            stage.wait_for_workers()
            scenario.play(stage)
            stage.settle()
            print_final(engine, scenario, stage, out)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            codes = [process.wait(timeout=30) for process in processes]
            tap.delete()
            engine.dispose()
    print(f"\nprocesses stopped with exit codes {codes}", file=out)
    return 0 if all(code == 0 for code in codes) else 1


def _spawn(arguments: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `sagabox ARGUMENTS` with this interpreter, as its own process."""
    command = [sys.executable, "-m", "sagabox.cli", *arguments]
    return subprocess.Popen(command, env=environment)  # noqa: S603 - our own program
