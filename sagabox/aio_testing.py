"""`AsyncSagaHarness`: the time-travel harness for async tests (anyio or pytest-asyncio).

    async with AsyncSagaHarness(app, database="sqlite:///t.db") as h:
        async with h.transaction() as session:           # an AsyncSession, as a request has
            await app.aio.start(session, OfferSaga, OfferMade(offer_id="O-1"))
        await h.advance(timedelta(days=3))
        assert "offered" == await h.state(OfferSaga, "O-1")
        assert 1 == len(h.published(CustomerReminded))

It wraps `SagaHarness`: the same frozen clock, relay and workers. Those run synchronously in the
test's thread when awaited, so simulated time stays deterministic; the event loop keeps real
time, so the service's own awaits and timeouts behave. Writes go through an async engine on the
harness's database, as the service under test writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from outbox.aio import AsyncOutbox, make_async_engine
from outbox.dead_letters import DeadLetter
from outbox.messages import Command, Event, Message
from sagabox.app import App
from sagabox.testing import SagaHarness, Shipped
from sagas.definition import Saga

if TYPE_CHECKING:
    from freezegun.api import FrozenDateTimeFactory
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

S = TypeVar("S", bound=Saga[Any])
M = TypeVar("M", bound=Message)


class AsyncSagaHarness:
    """`SagaHarness` with awaitable driving and reading, and `AsyncSession` transactions."""

    def __init__(self, *apps: App, database: str, **options: Any) -> None:
        #: The sync harness doing the work; options are its own (start, business, batch_size...).
        self.sync = SagaHarness(*apps, database=database, **options)
        self._engine: AsyncEngine | None = None

    async def __aenter__(self) -> AsyncSagaHarness:
        self.sync.__enter__()
        self._engine = make_async_engine(self.sync.database)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the async engine, then the sync harness (clock, connections, broker)."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        for app in self.sync.apps:
            await app.aio.dispose()
        self.sync.close()

    # --- driving ------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """An `AsyncSession` in a transaction, committed at the end: what a request does."""
        from sqlalchemy.ext.asyncio import AsyncSession

        assert self._engine is not None, "use the harness as `async with`"
        async with AsyncSession(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    async def dispatch(
        self, *messages: Message, to: str | None = None, copies: int = 1, run: bool = True
    ) -> None:
        """Send messages through the outbox, each `copies` times, then run until quiet (see
        `SagaHarness.dispatch`); written through the async API."""
        async with self.transaction() as session:
            outbox = AsyncOutbox(session)
            for message in messages:
                destination = None
                if isinstance(message, Command) or not isinstance(message, Event):
                    destination = to or self.sync.apps[0].name
                for _ in range(copies):
                    await outbox.add(message, destination=destination)
        if run:
            await self.run_until_quiet()

    async def run_until_quiet(self) -> int:
        """Relay and work until nothing is due or waiting; return how many were processed."""
        return self.sync.run_until_quiet()

    async def advance(self, delta: timedelta) -> None:
        """Move the clock forward by `delta`, delivering every due row on the way."""
        self.sync.advance(delta)

    async def ship(self) -> int:
        """Run only the relay (see `SagaHarness.ship`)."""
        return self.sync.ship()

    @property
    def now(self) -> datetime:
        """The simulated time."""
        return self.sync.now

    @property
    def clock(self) -> FrozenDateTimeFactory:
        """The frozen clock, to move it without delivering anything."""
        return self.sync.clock

    # --- reading ------------------------------------------------------------------------------

    async def saga(self, saga_type: type[S], correlation_id: str) -> S | None:
        """The saga instance, as stored now (read through the async API)."""
        for app in self.sync.apps:
            if saga_type in app.runtime.sagas:
                async with self.transaction() as session:
                    return await app.aio.load(session, saga_type, correlation_id)
        raise ValueError(f"no app of this harness runs {saga_type.__name__}")

    async def state(self, saga_type: type[Saga[Any]], correlation_id: str) -> str | None:
        """The saga's current state name (None if it does not exist)."""
        saga = await self.saga(saga_type, correlation_id)
        return saga.state_name if saga is not None else None

    async def journal(
        self, saga_type: type[Saga[Any]], correlation_id: str
    ) -> list[dict[str, Any]]:
        """Every message the saga handled or refused, oldest first."""
        return self.sync.journal(saga_type, correlation_id)

    async def dead_letters(self) -> list[DeadLetter]:
        """What the workers gave up on."""
        return self.sync.dead_letters()

    async def rows(self, table: Any) -> list[Any]:
        """Every row of one of the business tables."""
        return self.sync.rows(table)

    def sent(self, message_type: type[M] | None = None) -> list[M]:
        """Commands (and timeouts) the relay shipped, optionally of one type."""
        return self.sync.sent(message_type)

    def published(self, message_type: type[M] | None = None) -> list[M]:
        """Events the relay shipped, optionally of one type."""
        return self.sync.published(message_type)

    @property
    def shipped(self) -> list[Shipped]:
        """Everything the relay shipped, in order."""
        return self.sync.shipped
