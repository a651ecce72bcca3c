"""A generated stateful test for any saga class: hypothesis drives the real runtime through any
sequence of deliveries, duplicates, late and reordered timeouts, clock moves, prunes, renewals
and races, and checks sagabox's exactly-once guarantees after every step.

    from hypothesis import settings
    from hypothesis import strategies as st
    from sagabox.testing_stateful import saga_machine

    def messages(key: str) -> st.SearchStrategy[Message]:
        return st.one_of(st.builds(OrderPlaced, order_id=st.just(key), ...), ...)

    def test_order_saga(database_url: str) -> None:
        machine = saga_machine(OrderSaga, messages=messages, database=database_url)
        run_state_machine_as_test(machine, settings=settings(max_examples=25, deadline=None))

`database` is a migrated database this test owns: every example starts by emptying sagabox's
tables. The invariants checked after every step: no message id ever names two messages; every
effect (an emitted command or event) reaches its consumer's inbox as new, once; a finished
saga never changes; the pending timeouts equal the timeout rows in the outbox (plus those
shipped and not yet delivered); the journal has one line per version of every saga.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from outbox import clock
from outbox.database import make_engine
from outbox.envelope import CONTENT_TYPE, Envelope, decode
from outbox.inbox import Inbox
from outbox.messages import Message
from outbox.tables import metadata, outbox_messages
from sagas.definition import Saga
from sagas.errors import ConcurrencyConflict, SagaError
from sagas.retention import prune_finished
from sagas.runtime import SagaRuntime
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import Timeout

try:
    from freezegun import freeze_time
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"sagabox.testing_stateful needs {exc.name}: pip install 'sagabox[testing]'"
    ) from exc

#: A strategy of messages (of any type the sagas handle) for one correlation id.
Messages = Callable[[str], "st.SearchStrategy[Message]"]


def saga_machine(
    *sagas: type[Saga[Any]],
    messages: Messages,
    database: str,
    keys: Sequence[str] = ("k-1", "k-2"),
    endpoint: str = "sagas",
    max_delay: timedelta = timedelta(days=10),
) -> type[RuleBasedStateMachine]:
    """A `RuleBasedStateMachine` class testing `sagas` on `database` with `messages(key)` for
    each correlation id in `keys`; run it with hypothesis's `run_state_machine_as_test`."""
    if not sagas:
        raise ValueError("saga_machine needs at least one saga class")
    timeout_types = {
        name
        for saga in sagas
        for name, message_type in saga.message_types.items()
        if issubclass(message_type, Timeout)
    }
    engine_holder: dict[str, Engine] = {}

    def engine() -> Engine:
        if "engine" not in engine_holder:
            engine_holder["engine"] = make_engine(database)
        return engine_holder["engine"]

    class SagaMachine(RuleBasedStateMachine):
        """Deliver, duplicate, reorder, advance, prune, renew and race; check after each step."""

        def __init__(self) -> None:
            super().__init__()
            self.freezer = freeze_time("2026-01-05 09:00:00+00:00")
            self.clock = self.freezer.start()
            self.engine = engine()
            self.runtime = SagaRuntime(sagas, endpoint=endpoint)
            with self.engine.begin() as connection:
                for table in reversed(metadata.sorted_tables):
                    connection.execute(delete(table))
            self.delivered: list[Message] = []
            self.in_flight: list[Message] = []
            #: Every message id the outbox ever held, with the row that held it.
            self.rows_by_id: dict[Any, int] = {}
            self.finished: dict[tuple[str, str], tuple[Any, ...]] = {}

        def teardown(self) -> None:
            self.freezer.stop()

        # --- driving ----------------------------------------------------------------------

        def _deliver(self, message: Message) -> None:
            """What a worker does: record in the inbox and handle, in one transaction;
            refused input (a SagaError) rolls back; conflicts are retried."""
            for _ in range(5):
                try:
                    with Session(self.engine) as session, session.begin():
                        if Inbox(session, endpoint).record(message.message_id):
                            self.runtime.handle(session, message)
                    return
                except ConcurrencyConflict:
                    continue
                except SagaError:
                    return
            raise AssertionError(f"{message.type_name} still conflicted after 5 tries")

        @rule(data=st.data(), key=st.sampled_from(list(keys)))
        def deliver(self, data: st.DataObject, key: str) -> None:
            message = data.draw(messages(key))
            self._deliver(message)
            self.delivered.append(message)

        @precondition(lambda self: bool(self.delivered))
        @rule(data=st.data())
        def deliver_again(self, data: st.DataObject) -> None:
            self._deliver(data.draw(st.sampled_from(self.delivered)))

        @rule(delay=st.timedeltas(min_value=timedelta(0), max_value=max_delay))
        def advance(self, delay: timedelta) -> None:
            self.clock.tick(delay)

        @rule()
        def ship_due_timeouts(self) -> None:
            """The relay ships due timeouts; they are delivered later, in any order."""
            for row in self._take(due_timeouts=True):
                self.in_flight.append(_decode(row))

        @rule()
        def fire_due_timeouts(self) -> None:
            """The relay ships due timeouts and the worker handles them at once, in due order."""
            for row in sorted(self._take(due_timeouts=True), key=lambda r: r["available_at"]):
                self._deliver(_decode(row))

        @precondition(lambda self: bool(self.in_flight))
        @rule(data=st.data(), twice=st.booleans())
        def deliver_timeout(self, data: st.DataObject, twice: bool) -> None:
            index = data.draw(st.integers(0, len(self.in_flight) - 1))
            message = self.in_flight.pop(index)
            for _ in range(2 if twice else 1):
                self._deliver(message)

        @rule()
        def ship_effects(self) -> None:
            """Commands and events reach their consumers, whose inboxes must find each new."""
            for row in self._take(due_timeouts=False):
                with self.engine.begin() as connection:
                    fresh = Inbox(connection, f"effects:{row['destination']}").record(
                        row["message_id"]
                    )
                assert fresh, f"{row['type']} {row['message_id']}: dropped as a duplicate"

        @rule()
        def prune(self) -> None:
            with self.engine.begin() as connection:
                while prune_finished(connection, older_than=clock.now() + timedelta(seconds=1)):
                    pass

        @rule(data=st.data(), key=st.sampled_from(list(keys)))
        def race(self, data: st.DataObject, key: str) -> None:
            first, second = data.draw(messages(key)), data.draw(messages(key))
            barrier = threading.Barrier(2, timeout=30)
            errors: list[BaseException] = []

            def run(message: Message) -> None:
                try:
                    barrier.wait()
                    self._deliver(message)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(m,)) for m in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not any(thread.is_alive() for thread in threads), "a delivery hung"
            assert [] == errors
            self.delivered.extend([first, second])

        def _take(self, *, due_timeouts: bool) -> list[Any]:
            o = outbox_messages.c
            query = select(outbox_messages).order_by(o.id)
            if due_timeouts:
                query = query.where(o.type.in_(timeout_types), o.available_at <= clock.now())
            else:
                query = query.where(o.type.not_in(timeout_types))
            with self.engine.begin() as connection:
                rows = list(connection.execute(query).mappings())
                if rows:
                    connection.execute(
                        delete(outbox_messages).where(o.id.in_([r["id"] for r in rows]))
                    )
            return rows

        # --- invariants -------------------------------------------------------------------

        @invariant()
        def guarantees_hold(self) -> None:
            with self.engine.connect() as connection:
                outbox = list(connection.execute(select(outbox_messages)).mappings())
                instances = list(connection.execute(select(saga_instances)).mappings())
                journal = list(
                    connection.execute(
                        select(
                            saga_journal.c.saga_id,
                            saga_journal.c.incarnation,
                            saga_journal.c.version,
                        )
                    )
                )
            for row in outbox:
                first = self.rows_by_id.setdefault(row["message_id"], row["id"])
                assert first == row["id"], f"message id {row['message_id']} names two messages"
            pending: set[uuid.UUID] = set()
            versions: dict[tuple[Any, Any], list[int]] = {}
            for line in journal:
                if line.version is not None:
                    versions.setdefault((line.saga_id, line.incarnation), []).append(line.version)
            for row in instances:
                key = (row["saga_type"], row["correlation_id"])
                snapshot = (row["incarnation"], row["state"], row["data"], row["version"])
                if row["finished_at"] is not None:
                    kept = self.finished.setdefault(key, snapshot)
                    if kept[0] == snapshot[0]:
                        assert kept == snapshot, f"finished saga {key} changed"
                    else:
                        self.finished[key] = snapshot  # a new incarnation finished
                ids = {entry["message_id"] for entry in (row["timeouts"] or {}).values()}
                pending |= {_uuid(value) for value in ids}
                lines = sorted(versions.get((row["id"], row["incarnation"]), []))
                assert list(range(1, row["version"] + 1)) == lines, (
                    f"the journal of {key} does not explain versions 1..{row['version']}: {lines}"
                )
            scheduled = {row["message_id"] for row in outbox if row["type"] in timeout_types}
            on_the_way = {message.message_id for message in self.in_flight}
            assert scheduled <= pending, f"timeout rows nobody waits for: {scheduled - pending}"
            leaked = pending - scheduled - on_the_way
            assert not leaked, f"pending timeouts that can never arrive: {leaked}"

    SagaMachine.__name__ = f"{'_'.join(s.__name__ for s in sagas)}Machine"
    return SagaMachine


def _decode(row: Any) -> Message:
    return decode(Envelope.from_wire(row["payload"], row["headers"], CONTENT_TYPE))


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
