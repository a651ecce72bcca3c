"""The async API on AsyncSession and AsyncConnection (aiosqlite, psycopg async), and the sync
API refusing async sessions and `async def` callbacks loudly instead of losing their effects."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from outbox import Event, HandlerContext, Inbox, Outbox, clock, handles
from outbox.aio import AsyncInbox, AsyncOutbox
from outbox.errors import AsyncSessionGiven
from outbox.tables import inbox_messages, outbox_messages
from sagabox import App
from sagabox.aio import AsyncSagaRuntime
from sagas import Saga, SagaContext, SagaDefinitionError, SagaRuntime, on, store
from sagas.journal import journal_line, journal_of
from sagas.tables import saga_instances, saga_journal
from sagas.timeouts import Timeout
from tests.saga_fixtures import CreditChecked, LoanRequested, LoanSaga, RunCreditCheck

pytestmark = pytest.mark.anyio


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


def _requested(loan_id: str = "L-1") -> LoanRequested:
    return LoanRequested(loan_id=loan_id, amount=Decimal(2500))


# --- the async API writes in the caller's transaction ------------------------------------------


async def test_async_outbox_commits_and_rolls_back_with_the_caller(
    async_engine: AsyncEngine,
) -> None:
    """A committed AsyncOutbox row is there; one in a rolled-back transaction is not."""
    command = RunCreditCheck(loan_id="L-1", amount=Decimal(1))
    async with AsyncSession(async_engine) as session, session.begin():
        assert command.message_id == await AsyncOutbox(session).add(command, destination="credit")

    async def failing_request() -> None:
        async with AsyncSession(async_engine) as session, session.begin():
            await AsyncOutbox(session).add(
                RunCreditCheck(loan_id="L-2", amount=Decimal(1)), destination="credit"
            )
            raise RuntimeError("request failed")

    with pytest.raises(RuntimeError, match="request failed"):
        await failing_request()
    async with async_engine.connect() as connection:
        rows = (await connection.execute(select(outbox_messages.c.message_id))).all()
    assert [(command.message_id,)] == [tuple(row) for row in rows]


async def test_async_inbox_records_each_message_once(async_engine: AsyncEngine) -> None:
    """The second record of one id says False; `seen` reads without recording."""
    message = _requested()
    async with async_engine.begin() as connection:  # an AsyncConnection works as well
        inbox = AsyncInbox(connection, "credit")
        assert not await inbox.seen(message.message_id)
        assert await inbox.record(message.message_id)
        assert not await inbox.record(message.message_id)
        other = _requested("L-2")
        new = await inbox.record_many([message.message_id, other.message_id])
        assert {other.message_id} == new
    assert 2 == await _count(async_engine, inbox_messages)


async def test_async_runtime_starts_advances_and_loads_a_saga(async_engine: AsyncEngine) -> None:
    """start, handle and load on an AsyncSession write and read the same rows as the sync API."""
    runtime = AsyncSagaRuntime([LoanSaga])
    async with AsyncSession(async_engine) as session, session.begin():
        saga = await runtime.start(session, LoanSaga, _requested())
        assert "checking" == saga.state_name
    async with AsyncSession(async_engine) as session, session.begin():
        handled = await runtime.handle(session, CreditChecked(loan_id="L-1", ok=True))
    assert ["offered"] == [h.to_state for h in handled]
    async with async_engine.connect() as connection:
        loaded = await runtime.load(connection, LoanSaga, "L-1")
        journal = await connection.run_sync(journal_of, LoanSaga.id_for("L-1"))
    assert loaded is not None
    assert ("offered", 2, Decimal(2500)) == (loaded.state_name, loaded.version, loaded.data.amount)
    assert ["transition", "transition"] == [row["outcome"] for row in journal]
    # RunCreditCheck from the start, LoanOffered from the credit result.
    assert 2 == await _count(async_engine, outbox_messages)


async def test_a_failing_request_after_the_start_leaves_nothing(async_engine: AsyncEngine) -> None:
    """The saga, its journal and its outbox row roll back with the request's transaction."""
    runtime = AsyncSagaRuntime([LoanSaga])

    async def failing_request() -> None:
        async with AsyncSession(async_engine) as session, session.begin():
            await runtime.start(session, LoanSaga, _requested())
            raise LookupError("the request fails after starting the saga")

    with pytest.raises(LookupError):
        await failing_request()
    assert (0, 0) == (
        await _count(async_engine, saga_instances),
        await _count(async_engine, outbox_messages),
    )


async def test_app_aio_transaction_commits_on_the_apps_database(database_url: str) -> None:
    """`app.aio.transaction()` opens an async transaction on the App's own database."""
    app = App("loans", sagas=[LoanSaga], database=database_url)
    try:
        async with app.aio.transaction() as session:
            await app.aio.start(session, LoanSaga, _requested())
        async with app.aio.transaction() as session:
            saga = await app.aio.load(session, LoanSaga, "L-1")
        assert saga is not None
        assert "checking" == saga.state_name
    finally:
        await app.aio.dispose()
        app.engine.dispose()


# --- misuse fails loudly (regressions of issue 17's items 1-3) ---------------------------------


async def test_sync_outbox_refuses_an_async_session(async_engine: AsyncEngine) -> None:
    """Item 1: Outbox(AsyncSession).add used to write nothing and return; now it raises, naming
    the async API, and a transaction that goes on to commit has lost nothing it wrote."""
    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(AsyncSessionGiven, match=r"AsyncOutbox\(session\)\.add"):
            Outbox(session).add(_requested())  # type: ignore[arg-type]  # the misuse under test
        with pytest.raises(AsyncSessionGiven, match="AsyncInbox"):
            Inbox(session, "credit")  # type: ignore[arg-type]
        await AsyncOutbox(session).add(_requested())
    assert 1 == await _count(async_engine, outbox_messages)


async def test_app_start_refuses_an_async_session(async_engine: AsyncEngine) -> None:
    """Item 2: App.start(AsyncSession) used to fail with "'coroutine' object has no attribute
    'mappings'"; now it raises a named error pointing to app.aio.start."""
    app = App("loans", sagas=[LoanSaga])
    async with AsyncSession(async_engine) as session:
        with pytest.raises(AsyncSessionGiven, match=r"await app\.aio\.start"):
            app.start(session, LoanSaga, _requested())  # type: ignore[arg-type]
        with pytest.raises(AsyncSessionGiven, match="AsyncSagaRuntime"):
            SagaRuntime([LoanSaga]).handle(session, _requested())  # type: ignore[arg-type]
        with pytest.raises(AsyncSessionGiven, match=r"app\.aio\.dispatch"):
            app.dispatch(session, _requested())  # type: ignore[arg-type]


async def test_async_api_refuses_a_sync_session(database_url: str) -> None:
    """The other way round: a sync Session given to the async API says to use the sync one."""
    from outbox.database import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session, pytest.raises(AsyncSessionGiven, match="sync API"):
            await AsyncSagaRuntime([LoanSaga]).start(session, LoanSaga, _requested())  # type: ignore[arg-type]
    finally:
        engine.dispose()


class Noticed(Event, type="aiotest.Noticed"):
    key: str


async def _async_handler(ctx: HandlerContext, message: Noticed) -> None:
    """A handler whose effect would never happen."""


class _AsyncCallable:
    async def __call__(self, ctx: HandlerContext, message: Noticed) -> None:
        """A callable object whose call is a coroutine."""


@pytest.mark.parametrize(
    "handler",
    [_async_handler, functools.partial(_async_handler), _AsyncCallable()],
    ids=["async-def", "partial", "async-call"],
)
def test_an_async_handler_is_refused_when_declared(handler: Callable[..., Any]) -> None:
    """Item 3: `@handles` on an `async def` used to be accepted, then never awaited while the
    inbox recorded the message as done; now it is refused at declaration, saying what to do."""
    with pytest.raises(TypeError, match=r"is `async def`.*plain `def`"):
        handles(Noticed)(handler)


def test_an_async_wrapper_of_a_handler_is_refused_by_the_app() -> None:
    """A decorator that wraps a marked handler in `async def` (functools.wraps copies the mark)
    is refused when the App registers it."""

    @handles(Noticed)
    def handler(ctx: HandlerContext, message: Noticed) -> None:
        """A plain handler."""

    @functools.wraps(handler)
    async def wrapped(ctx: HandlerContext, message: Noticed) -> None:
        handler(ctx, message)

    with pytest.raises(TypeError, match=r"App\.add_handler: .* is `async def`"):
        App("notices", handlers=[wrapped])


class _Data(BaseModel):
    n: int = 0


def _saga_with(**callbacks: Any) -> type[Saga[Any]]:
    """Define a two-state saga whose one transition and state carry `callbacks`."""
    state_callbacks = {k: v for k, v in callbacks.items() if k in ("on_enter", "on_exit")}
    transition_callbacks = {k: v for k, v in callbacks.items() if k not in state_callbacks}
    finder = transition_callbacks.pop("correlation", "key")

    class AsyncSaga(Saga[_Data], name="aiotest.AsyncSaga"):
        states = ["new", {"name": "done", "final": True, **state_callbacks}]
        transitions = [on(Noticed, "new", "done", **transition_callbacks)]
        correlation = {Noticed: finder}

        async def act(self, ctx: SagaContext, message: Noticed) -> None:
            """An action that would never run."""

        async def guard(self, ctx: SagaContext, message: Noticed) -> bool:
            """A guard whose coroutine is always truthy."""
            return False

        def fine(self, ctx: SagaContext, message: Noticed) -> None:
            """A synchronous action."""

    return AsyncSaga


async def _find(message: Noticed) -> str:
    return message.key


@pytest.mark.parametrize(
    "callbacks",
    [
        {"after": "act"},
        {"before": ["fine", "act"]},
        {"conditions": "guard"},
        {"unless": ["guard"]},
        {"prepare": "act"},
        {"on_enter": "act"},
        {"on_exit": ["act"]},
        {"after": _async_handler},
        {"correlation": _find},
    ],
    ids=lambda c: next(iter(c)),
)
def test_an_async_saga_callback_is_refused_when_the_class_is_defined(
    callbacks: dict[str, Any],
) -> None:
    """Actions, guards, state callbacks and correlation finders must be plain functions."""
    with pytest.raises(SagaDefinitionError, match=r"AsyncSaga: .* is `async def`"):
        _saga_with(**callbacks)


def test_an_async_data_upcaster_is_refused_when_registered() -> None:
    """An `async def` upcaster used to be registered, then its coroutine stood in for the
    stored data and failed at every load of an old row; now the decorator refuses it."""

    class Evolved(Saga[_Data], name="aiotest.Evolved"):
        version = 2
        states = ["new", {"name": "done", "final": True}]
        transitions = [on(Noticed, "new", "done")]
        correlation = {Noticed: "key"}

    async def upcast(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(SagaDefinitionError, match=r"data_upcaster\(from_version=1\): .*async def"):
        Evolved.data_upcaster(from_version=1)(upcast)  # type: ignore[arg-type]
    assert {} == Evolved.data_upcasters


def test_a_saga_of_sync_callbacks_is_still_accepted() -> None:
    """The check refuses coroutines only."""
    assert "aiotest.AsyncSaga" == _saga_with(after="fine", on_enter="fine").saga_type


# --- a new saga's rows in one statement (PostgreSQL) or one after the other (SQLite) ----------


class Reminder(Event, type="aiotest.Reminder"):
    key: str


class Nudge(Timeout, type="aiotest.Nudge"):
    key: str


class _Busy(Saga[_Data], name="aiotest.Busy"):
    """Starts by sending a command, publishing an event and scheduling a reminder."""

    states = ["new", "waiting", {"name": "done", "final": True}]
    transitions = [on(Noticed, "new", "waiting", after="begin"), on(Nudge, "waiting", "done")]
    correlation = {Noticed: "key", Nudge: "key"}

    def begin(self, ctx: SagaContext, message: Noticed) -> None:
        ctx.send(RunCreditCheck(loan_id=message.key, amount=Decimal(1)), to="credit")
        ctx.publish(Reminder(key=message.key))
        ctx.schedule("nudge", Nudge(key=message.key), after=timedelta(hours=1))


async def _rows_of(engine: AsyncEngine) -> tuple[int, int, list[str]]:
    sagas, journal = await _count(engine, saga_instances), await _count(engine, saga_journal)
    async with engine.connect() as connection:  # one at a time: SQLite's BEGIN IMMEDIATE
        destinations = await connection.execute(
            select(outbox_messages.c.destination).order_by(outbox_messages.c.id)
        )
        return sagas, journal, list(destinations.scalars())


async def test_a_start_writes_its_saga_journal_and_messages_together(
    async_engine: AsyncEngine,
) -> None:
    """The saga row, its journal line and each message it sent, published or scheduled go in
    with it, the messages in the order the saga emitted them (the relay ships a partition in
    id order); a create that finds the saga already there writes none of them."""
    runtime = AsyncSagaRuntime([_Busy], endpoint="busy")
    async with AsyncSession(async_engine) as session, session.begin():
        saga = await runtime.start(session, _Busy, Noticed(key="k-1"))
    assert (1, 1, ["credit", "aiotest.Reminder", "busy"]) == await _rows_of(async_engine)
    async with async_engine.connect() as connection:
        due = (await connection.execute(select(outbox_messages.c.available_at))).scalars().all()
        nudge = saga.timeouts["nudge"]
    assert nudge.due_at in [clock.ensure_aware(d, what="due") for d in due]

    # The race `start` loses when another transaction creates the saga between its read and
    # its write: the rows given to go in with the saga row are not written either.
    def create_again(sync: Session) -> bool:
        again = _Busy(
            correlation_id="k-1",
            incarnation=uuid.uuid4(),
            state="waiting",
            data=_Data(),
            version=1,
            created_at=saga.created_at,
            updated_at=saga.updated_at,
        )
        line = journal_line(_Busy, "k-1", Noticed(key="k-1"), "transition")
        message = Outbox(sync).row(Reminder(key="k-1"))
        return store.create(sync, again, then=[(saga_journal, line), (outbox_messages, message)])

    async with AsyncSession(async_engine) as session, session.begin():
        assert not await session.run_sync(create_again)
    assert (1, 1, ["credit", "aiotest.Reminder", "busy"]) == await _rows_of(async_engine)


# --- cancellation: a request cancelled inside a call rolls back on a connection at rest -------


@pytest.mark.parametrize("how", ["task.cancel", "anyio-scope"])
async def test_a_request_cancelled_inside_a_start_leaves_nothing_and_no_lock(
    database_url: str, async_engine: AsyncEngine, how: str
) -> None:
    """A request cancelled (a timeout, a client gone) while `start` writes the saga row rolls
    back whole, and the database stays writable: the call finishes its statements before the
    cancellation goes on, where aiosqlite used to abandon the `INSERT ... RETURNING` mid-way,
    keeping SQLite's write lock from every other writer."""
    cancel: list[Callable[[], object]] = []

    def cancel_at_the_saga_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # PostgreSQL writes the saga's rows in one statement, SQLite one after the other.
        if cancel and f"INSERT INTO {saga_instances.name}".upper() in statement.upper():
            cancel.pop()()

    async def request() -> None:
        with anyio.CancelScope() as scope:
            task = asyncio.current_task()
            assert task is not None
            cancel.append(scope.cancel if how == "anyio-scope" else task.cancel)
            async with AsyncSession(async_engine) as session, session.begin():
                await AsyncSagaRuntime([LoanSaga]).start(session, LoanSaga, _requested())
        raise asyncio.CancelledError  # the scope swallowed its own cancellation

    event.listen(async_engine.sync_engine, "before_cursor_execute", cancel_at_the_saga_insert)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(request())
    assert not cancel, "the cancellation was requested inside the start"
    # Another writer, with a short lock wait, gets in at once.
    sqlite = database_url.startswith("sqlite")
    writer = create_engine(database_url, connect_args={"timeout": 2} if sqlite else {})
    try:
        with Session(writer) as session, session.begin():
            Outbox(session).add(Noticed(key="after"))
    finally:
        writer.dispose()
    assert (0, 1) == (
        await _count(async_engine, saga_instances),
        await _count(async_engine, outbox_messages),
    )
