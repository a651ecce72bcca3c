"""sagabox for asyncio services: an App's sagas, outbox and inbox on an `AsyncSession`.

    async with app.aio.transaction() as session:      # or any AsyncSession, in .begin()
        session.add(Loan(id="L-1", amount=Decimal(2500)))
        await app.aio.start(session, LoanSaga, LoanRequested(loan_id="L-1", amount=...))

A thin seam over the sync code (SQLAlchemy's `run_sync`), so the rows are the same and saga
actions stay synchronous decisions. The worker stays synchronous too: handlers and actions are
plain `def` (an `async def` one is refused when declared). Needs `pip install 'sagabox[asyncio]'`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from outbox.aio import (
    AsyncInbox,
    AsyncOutbox,
    async_database_url,
    make_async_engine,
    run_sync,
)
from outbox.messages import Message
from sagas.aio import AsyncSagaRuntime
from sagas.definition import Saga
from sagas.outcomes import Handled

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from outbox.aio import AsyncExecutor
    from sagabox.app import App

S = TypeVar("S", bound=Saga[Any])

__all__ = [
    "AsyncApp",
    "AsyncInbox",
    "AsyncOutbox",
    "AsyncSagaRuntime",
    "async_database_url",
    "make_async_engine",
    "run_sync",
]


class AsyncApp:
    """The async face of an `App` (`app.aio`): start sagas, deliver messages and read sagas in
    the caller's `AsyncSession`, and an async engine on the App's database for services that
    let sagabox open their transactions (the FastAPI and Litestar integrations do)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.runtime = AsyncSagaRuntime(app.runtime)

    async def start(self, executor: AsyncExecutor, saga_type: type[S], message: Message) -> S:
        """Start a saga from a request handler, in the caller's transaction."""
        self.app.check_runs(saga_type)
        return await self.runtime.start(executor, saga_type, message)

    async def handle(self, executor: AsyncExecutor, message: Message) -> list[Handled]:
        """Deliver `message` to this App's sagas (not its plain handlers)."""
        return await self.runtime.handle(executor, message)

    async def dispatch(self, session: AsyncSession, message: Message) -> None:
        """Deliver `message` to the sagas, then the plain handlers, as the worker does."""
        await session.run_sync(self.app.dispatch, message)

    async def load(
        self, executor: AsyncExecutor, saga_type: type[S] | str, correlation_id: str
    ) -> S | None:
        """Read a saga instance (finished or not) without changing it."""
        return await self.runtime.load(executor, saga_type, correlation_id)

    @cached_property
    def engine(self) -> AsyncEngine:
        """An async engine on the App's database (its async driver), made on first use."""
        return make_async_engine(self.app.database_url)

    @cached_property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions on `engine`; objects stay readable after the commit, as a response needs."""
        from sqlalchemy.ext.asyncio import async_sessionmaker

        return async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits when the block ends, or rolls back if it
        raises: a request's business rows, sagas and outbox rows together or not at all."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close the async engine's connections (at the service's shutdown)."""
        if "engine" in self.__dict__:
            await self.__dict__.pop("engine").dispose()
            self.__dict__.pop("sessions", None)
