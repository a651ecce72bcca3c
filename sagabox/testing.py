"""A harness for testing sagas with simulated time: real runtime, relay and worker code on one
database and the in-process broker, with a frozen clock that only moves when told to.

    with SagaHarness(app, database="sqlite:///t.db") as h:
        h.dispatch(OfferMade(offer_id="O-1"))
        h.advance(timedelta(days=3))          # fires the day-2 reminder on the way
        assert "offered" == h.state(OfferSaga, "O-1")
        assert 1 == len(h.published(CustomerReminded))
        h.deploy(app_v2)                      # v2 of the saga, with O-1 in flight

`advance` moves the clock to each due outbox row in turn (timeouts, delayed retries) and runs the
relay and the workers until nothing is left to do, so chained timeouts fire in due order within
one call. The `saga_harness` pytest fixture (registered by this package) builds one per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

try:
    from freezegun import freeze_time
    from freezegun.api import FrozenDateTimeFactory, StepTickTimeFactory, TickingDateTimeFactory
except ModuleNotFoundError as exc:  # an optional extra: say which install line brings it
    # Still a ModuleNotFoundError naming the module, so `sagabox demo` can name its own extra.
    raise ModuleNotFoundError(
        f"the saga test harness needs freezegun ({exc}): pip install 'sagabox[testing]'",
        name=exc.name,
    ) from exc
from kombu import Connection, Queue, binding
from kombu.transport import memory
from sqlalchemy import MetaData, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from outbox import clock
from outbox.claim import next_due
from outbox.database import make_engine
from outbox.dead_letters import DeadLetter, list_dead_letters
from outbox.envelope import Envelope, decode
from outbox.messages import Command, Event, Message
from outbox.registry import MessageRegistry
from outbox.writer import Outbox
from relay.broker import topic_exchange
from relay.daemon import Relay
from relay.worker import Worker
from sagabox import migrate
from sagabox.app import App
from sagas.definition import Saga
from sagas.journal import journal_of

S = TypeVar("S", bound=Saga[Any])
M = TypeVar("M", bound=Message)

#: Where the harness's clock starts unless told otherwise: a Monday morning, UTC.
DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=clock.UTC)


class Unsettled(AssertionError):
    """The apps kept producing messages: probably two handlers answering each other forever."""


@dataclass(frozen=True)
class Shipped:
    """A message the relay put on the broker: where it went, when, and what it was."""

    routing_key: str
    at: datetime
    message: Message


class SagaHarness:
    """Runs `apps` on `database` and the in-process broker, with the clock under test control."""

    def __init__(
        self,
        *apps: App,
        database: str,
        start: datetime = DEFAULT_START,
        business: Sequence[MetaData] = (),
        max_rounds: int = 1000,
        observer: Callable[[], None] | None = None,
        batch_size: int = 1,
    ) -> None:
        if not apps:
            raise ValueError("SagaHarness needs at least one App")
        exchanges = {app.exchange for app in apps}
        if len(exchanges) > 1:
            raise ValueError(f"the apps use different exchanges ({sorted(exchanges)}); use one")
        self.apps = apps
        self.database = database
        self.start = clock.ensure_aware(start, what="start")
        self.business = business
        self.max_rounds = max_rounds
        #: The workers' `batch_size`: test a saga as a batching `sagabox worker` runs it.
        self.batch_size = batch_size
        #: Called after every relay pass and every worker pass: a demo prints what changed.
        self.observer = observer
        self.exchange = exchanges.pop()
        self.shipped: list[Shipped] = []
        self._freezer: Any = None
        self._frozen: FrozenDateTimeFactory | None = None
        self._relay: Relay | None = None
        self._workers: list[Worker] = []
        self._tap_connection: Connection | None = None
        self._tap: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SagaHarness:
        # real_asyncio: an async test's event loop keeps real time; frozen, it hangs.
        self._freezer = freeze_time(self.start, real_asyncio=True)
        frozen = self._freezer.start()
        if isinstance(frozen, StepTickTimeFactory | TickingDateTimeFactory):
            raise TypeError("the harness needs a clock that stands still")
        self._frozen = frozen
        clear_memory_broker()
        migrate.upgrade(self.database)
        for app in self.apps:
            app.configure(database=self.database, broker="memory://")
        engine = self.apps[0].engine
        for metadata in self.business:
            metadata.create_all(engine)
        self._tap_connection = Connection("memory://")
        self._tap = open_tap(self._tap_connection.channel(), self.exchange, "harness")
        self._workers = [app.worker(batch_size=self.batch_size) for app in self.apps]
        for worker in self._workers:
            worker.drain()  # declares each endpoint's queue before anything is published
        self._relay = self.apps[0].relay(listen=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release connections, stop the clock freeze and empty the in-process broker."""
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._tap_connection is not None:
            self._tap_connection.release()
            self._tap_connection = None
        for app in self.apps:
            app.engine.dispose()
        clear_memory_broker()
        if self._freezer is not None:
            self._freezer.stop()
            self._freezer = None

    # --- driving ------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The simulated time."""
        return clock.now()

    def dispatch(
        self, *messages: Message, to: str | None = None, copies: int = 1, run: bool = True
    ) -> None:
        """Send messages through the outbox (commands to `to`, by default the first app), each
        `copies` times with the same id, then run until quiet (unless `run=False`)."""
        with self.transaction() as session:
            outbox = Outbox(session)
            for message in messages:
                destination = None
                if isinstance(message, Command) or not isinstance(message, Event):
                    destination = to or self.apps[0].name
                for _ in range(copies):
                    outbox.add(message, destination=destination)
        if run:
            self.run_until_quiet()

    def run_until_quiet(self) -> int:
        """Relay and work until no message is due or waiting; return how many were processed."""
        assert self._relay is not None, "use the harness as a context manager"
        total = 0
        for _ in range(self.max_rounds):
            shipped = self.ship()
            processed = 0
            for worker in self._workers:
                processed += worker.drain()
                self._observe()
            total += processed
            if shipped == 0 and processed == 0:
                return total
        raise Unsettled(
            f"still busy after {self.max_rounds} rounds of relaying and handling; are two "
            "handlers answering each other forever?"
        )

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by `delta`, stopping at every due row on the way (timeouts,
        reminders, delayed retries) to deliver it and what follows from it."""
        assert self._frozen is not None, "use the harness as a context manager"
        target = self.now + delta
        self.run_until_quiet()
        while True:
            with self.apps[0].engine.connect() as connection:
                due = next_due(connection, after=self.now)
            if due is None or due > target:
                break
            self._frozen.move_to(due)
            self.run_until_quiet()
        self._frozen.move_to(target)
        self.run_until_quiet()

    @property
    def clock(self) -> FrozenDateTimeFactory:
        """The frozen clock, to move it without delivering anything (`tick`, `move_to`)."""
        assert self._frozen is not None, "use the harness as a context manager"
        return self._frozen

    def ship(self) -> int:
        """Run only the relay: due messages reach the broker, and nobody handles them yet.

        With `transaction()` this stages races, e.g. a timeout already on its way while a
        request handler moves the saga on."""
        assert self._relay is not None, "use the harness as a context manager"
        shipped = self._relay.drain()
        self._record_shipped()
        self._observe()
        return shipped

    @property
    def workers(self) -> list[Worker]:
        """The apps' workers, in the order of the apps (their `stats` count duplicates)."""
        return list(self._workers)

    def restart_relay(self) -> None:
        """Throw the relay away and start a new one, as after a process restart."""
        assert self._relay is not None, "use the harness as a context manager"
        self._relay.close()
        self._relay = self.apps[0].relay(listen=False)

    def deploy(self, *apps: App) -> None:
        """Swap in the next version of the system mid-scenario, as a deploy does: the database,
        the broker's queues and the clock stay; the relay and the workers restart on `apps`
        (say, one running v2 of a saga), and handle what is waiting from then on."""
        assert self._relay is not None, "use the harness as a context manager"
        if not apps:
            raise ValueError("deploy() needs the apps of the new version")
        exchanges = {app.exchange for app in apps}
        if exchanges != {self.exchange}:
            raise ValueError(f"the new apps must use the exchange {self.exchange!r}")
        self._relay.close()
        for app in self.apps:
            app.engine.dispose()
        self.apps = apps
        for app in apps:
            app.configure(database=self.database, broker="memory://")
        for metadata in self.business:
            metadata.create_all(apps[0].engine)
        self._workers = [app.worker(batch_size=self.batch_size) for app in apps]
        for worker in self._workers:
            worker.drain()  # declares new queues and bindings; handles what waits, as on a deploy
        self._relay = apps[0].relay(listen=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction, committed at the end: what a request handler would do."""
        with Session(self.apps[0].engine) as session, session.begin():
            yield session

    # --- reading ------------------------------------------------------------------------------

    def saga(self, saga_type: type[S], correlation_id: str) -> S | None:
        """The saga instance, as stored now."""
        with Session(self.apps[0].engine) as session:
            for app in self.apps:
                if saga_type in app.runtime.sagas:
                    return app.runtime.load(session, saga_type, correlation_id)
        raise ValueError(f"no app of this harness runs {saga_type.__name__}")

    def state(self, saga_type: type[Saga[Any]], correlation_id: str) -> str | None:
        """The saga's current state name (None if it does not exist)."""
        saga = self.saga(saga_type, correlation_id)
        return saga.state_name if saga is not None else None

    def journal(self, saga_type: type[Saga[Any]], correlation_id: str) -> list[dict[str, Any]]:
        """Every message the saga handled or refused, with its outcome and time, oldest first."""
        with self.apps[0].engine.connect() as connection:
            return journal_of(connection, saga_type.id_for(correlation_id))

    def sent(self, message_type: type[M] | None = None) -> list[M]:
        """Commands (and timeouts) the relay shipped, optionally of one type."""
        return self._of(message_type, lambda m: not isinstance(m, Event))

    def published(self, message_type: type[M] | None = None) -> list[M]:
        """Events the relay shipped, optionally of one type."""
        return self._of(message_type, lambda m: isinstance(m, Event))

    def dead_letters(self) -> list[DeadLetter]:
        """What the workers gave up on."""
        with self.apps[0].engine.connect() as connection:
            return list_dead_letters(connection)

    def rows(self, table: Any) -> list[Any]:
        """Every row of one of the business tables, for assertions."""
        with self.apps[0].engine.connect() as connection:
            return list(connection.execute(select(table)))

    def _of(self, message_type: type[M] | None, keep: Any) -> list[M]:
        return [
            shipped.message  # type: ignore[misc]
            for shipped in self.shipped
            if keep(shipped.message)
            and (message_type is None or isinstance(shipped.message, message_type))
        ]

    def _observe(self) -> None:
        if self.observer is not None:
            self.observer()

    def _record_shipped(self) -> None:
        self.shipped.extend(read_tap(self._tap, self.apps[0].registry))


def open_tap(channel: Any, exchange: str, purpose: str, *, auto_delete: bool = False) -> Any:
    """A queue bound to every routing key of `exchange`: a copy of everything shipped."""
    tap = Queue(
        f"sagabox-{purpose}-tap-{uuid.uuid4().hex[:8]}",
        [binding(topic_exchange(exchange), routing_key="#")],
        auto_delete=auto_delete,
    )(channel)
    tap.declare()
    return tap


def read_tap(tap: Any, registry: MessageRegistry) -> Iterator[Shipped]:
    """Take what waits on a tap, decoded, stamped with the (simulated) time it was seen."""
    while (raw := tap.get(no_ack=True)) is not None:
        envelope = Envelope.from_wire(raw.body, raw.headers, raw.content_type)
        routing_key = raw.delivery_info.get("routing_key", "")
        yield Shipped(routing_key, clock.now(), decode(envelope, registry))


@contextmanager
def scratch_database(
    server: str | URL, *, migrated: bool = True, prefix: str = "scratch"
) -> Iterator[str]:
    """A database created on the PostgreSQL `server` (with sagabox's tables unless
    `migrated=False`), yielded as a URL and dropped afterwards, even if connections remain."""
    admin = make_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        try:
            if migrated:
                migrate.upgrade(url)
            yield url
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def clear_memory_broker() -> None:
    """Empty kombu's in-process broker: its queues and bindings are shared by the whole process,
    so each harness (and each test using `memory://`) starts and ends with it empty."""
    memory.Channel.queues.clear()
    memory.Transport.global_state.clear()
