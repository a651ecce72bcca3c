"""`sagabox demo NAME`: play an example's scenario with simulated time and print its timeline.

Every message the relay ships, every saga transition and every jump of the clock is printed as
it happens, then the final state of every saga. The examples ship with sagabox as `sagabox.examples`
(the `examples/` folder of a checkout); each has a `scenario` module with `TITLE`, `apps()`,
`business` and `play`. The simulated clock needs freezegun: `pip install 'sagabox[demo]'`.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TextIO

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox.messages import META_FIELDS, Event, Message
from outbox.tables import inbox_messages
from sagabox.app import App
from sagabox.demo_catalog import load_scenario
from sagabox.testing import SagaHarness, Shipped
from sagas import ledger
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import Timeout


class Scene(Protocol):
    """What a scenario's `play` and `report` use, with simulated time or with real processes."""

    def app(self, name: str) -> App: ...

    def say(self, text: str) -> None: ...

    def request(self, text: str) -> AbstractContextManager[Session]: ...

    def advance(self, delta: timedelta) -> None: ...

    def rows(self, table: Any) -> list[Any]: ...


def _when(at: datetime) -> str:
    return f"{at:%a %d %b %H:%M}"


def _fields(message: Message) -> str:
    hidden = META_FIELDS | {"saga", "timeout"}
    values = message.model_dump(mode="json", exclude=set(hidden))
    return ", ".join(f"{key}={value}" for key, value in values.items())


class Timeline:
    """Prints what happened since it last looked: shipped messages, handlings, transitions."""

    def __init__(self, engine: Engine, apps: Sequence[App], shipped: list[Shipped], out: TextIO):
        self._engine = engine
        self._shipped_list = shipped
        self._out = out
        self._shipped = 0
        self._journal = 0
        self._handled: set[tuple[str, str]] = set()
        # Endpoints with sagas show up as transitions; the others as "handled" lines.
        self._plain = {app.name for app in apps if not app.runtime.sagas}

    def __call__(self) -> None:
        for shipped in self._shipped_list[self._shipped :]:
            message = shipped.message
            if isinstance(message, Timeout):
                line = f"⏰ {message.type_name} ({message.timeout!r} is due)"
            elif isinstance(message, Event):
                line = f"📣 {message.type_name}  {_fields(message)}"
            else:
                line = f"✉  {message.type_name} → {shipped.routing_key}  {_fields(message)}"
            self._print(shipped.at, line)
        types = {str(s.message.message_id): s.message.type_name for s in self._shipped_list}
        self._shipped = len(self._shipped_list)
        with self._engine.connect() as connection:
            processed = connection.execute(
                select(inbox_messages).where(inbox_messages.c.consumer.in_(self._plain))
            ).all()
            for row in processed:
                key = (row.consumer, str(row.message_id))
                if key not in self._handled:
                    self._handled.add(key)
                    what = types.get(key[1], "a message")
                    self._print(row.processed_at, f"✔  {row.consumer} handled {what}")
            rows = connection.execute(
                select(saga_journal)
                .where(saga_journal.c.id > self._journal)
                .order_by(saga_journal.c.id)
            ).all()
        for row in rows:
            self._journal = row.id
            saga = row.saga_type.rsplit(".", 1)[-1]
            if row.outcome == "transition" and row.from_state != row.to_state:
                change = f"{row.from_state} → {row.to_state}"
            elif row.outcome in ("transition", "unchanged"):
                change = f"stays {row.to_state}"
            else:
                change = f"{row.outcome}, in {row.to_state or 'no saga'}"
            self._print(row.at, f"◆  {saga} {row.correlation_id}: {change}  (on {row.trigger})")

    def _print(self, at: datetime, text: str) -> None:
        print(f"  {_when(at)}  {text}", file=self._out)


class Stage:
    """What a scenario's `play` uses: narrate, act as a user or service, let time pass."""

    def __init__(self, harness: SagaHarness, timeline: Timeline, out: TextIO) -> None:
        self.harness = harness
        self._timeline = timeline
        self._out = out

    def app(self, name: str) -> App:
        """The endpoint named `name`."""
        for app in self.harness.apps:
            if app.name == name:
                return app
        raise KeyError(name)

    def say(self, text: str) -> None:
        """Print a line of the story."""
        print(f"\n{_when(self.harness.now)}  {text}", file=self._out)

    @contextmanager
    def request(self, text: str) -> Iterator[Session]:
        """Act in one transaction (a web request, a person at a screen), then let it settle."""
        self.say(f"▶ {text}")
        with self.harness.transaction() as session:
            yield session
        self._timeline()
        self.harness.run_until_quiet()

    def advance(self, delta: timedelta) -> None:
        """Let `delta` of simulated time pass, delivering whatever falls due on the way."""
        print(f"\n── {duration_text(delta)} later ──", file=self._out)
        self.harness.advance(delta)

    def rows(self, table: Any) -> list[Any]:
        """Every row of a business table."""
        return self.harness.rows(table)


def duration_text(delta: timedelta) -> str:
    """A duration as a person says it: "2 days", "6 hours"."""
    hours = round(delta.total_seconds() / 3600, 3)
    if hours >= 24 and hours % 24 == 0:
        days = int(hours // 24)
        return f"{days} day{'s' if days > 1 else ''}"
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


def run_demo(
    name: str,
    *,
    database: str | None = None,
    broker: str | None = None,
    day_seconds: float = 2.0,
    out: TextIO = sys.stdout,
) -> int:
    """Play example `name`: with simulated time on SQLite (or `database`) and the in-process
    broker; or, given a real `broker`, with the relay and one worker per endpoint as separate
    processes and a compressed clock. Returns 0."""
    if broker and not broker.startswith("memory://"):
        from sagabox.demo_live import run_live_demo

        if not database:
            raise ValueError("a demo on a real broker needs a shared database too: give --db")
        return run_live_demo(
            name, database=database, broker=broker, day_seconds=day_seconds, out=out
        )
    scenario = load_scenario(name)
    with tempfile.TemporaryDirectory(prefix="sagabox-demo-") as folder:
        url = database or f"sqlite:///{Path(folder) / 'demo.db'}"
        apps: list[App] = scenario.apps()
        with SagaHarness(*apps, database=url, business=[scenario.business]) as harness:
            timeline = Timeline(harness.apps[0].engine, apps, harness.shipped, out)
            harness.observer = timeline
            print(f"sagabox demo: {scenario.TITLE}", file=out)
            print(
                f"(simulated time; {len(apps)} endpoints on {url.split(':', 1)[0]} and the "
                "in-process broker)",
                file=out,
            )
            stage = Stage(harness, timeline, out)
            scenario.play(stage)
            print_final(harness.apps[0].engine, scenario, stage, out)
    return 0


def print_final(engine: Engine, scenario: ModuleType, stage: Scene, out: TextIO) -> None:
    """Every saga's final state, then the scenario's own report of its business tables."""
    print("\nFinal states:", file=out)
    with engine.connect() as connection:
        sagas = connection.execute(
            select(saga_instances).order_by(
                saga_instances.c.saga_type, saga_instances.c.correlation_id
            )
        ).all()
    for row in sagas:
        saga = row.saga_type.rsplit(".", 1)[-1]
        # The joins' parts and the steps' progress (`sagas.ledger`) would drown the line.
        data = {key: value for key, value in row.data.items() if key != ledger.FIELD}
        print(f"  {saga} {row.correlation_id}: {row.state}  {data}", file=out)
    if not sagas:
        print("  (no sagas: this flow is choreography only)", file=out)
    report: Callable[[Scene, TextIO], Any] | None = getattr(scenario, "report", None)
    if report is not None:
        report(stage, out)
