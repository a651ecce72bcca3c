"""What the web framework integrations share: an App served for a server's lifetime, and the
request's transaction, so `sagabox.fastapi` and `sagabox.litestar` only adapt them.

Neither framework is imported here: each integration imports its own, and this module only
needs SQLAlchemy's asyncio extension (`pip install 'sagabox[asyncio]'`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sagabox.aio import AsyncApp

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from sagabox.app import App


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[AsyncApp]:
    """`app`'s async face for as long as the server runs; its async engine (made on first use)
    is closed when the server stops, so no connection outlives the process's event loop."""
    try:
        yield app.aio
    finally:
        await app.aio.dispose()


@asynccontextmanager
async def request_transaction(sagas: AsyncApp) -> AsyncIterator[AsyncSession]:
    """A request's `AsyncSession`, in a transaction on the App's database: it commits when the
    handler returns, before the response goes out (both frameworks finish a dependency's
    generator first), and rolls back when the framework throws the handler's exception into
    the dependency's generator, which must hold this block open across its `yield` (an
    `async for` over a generator would leave the rollback to the garbage collector).
    So a 2xx answer means the business rows, the sagas and their outbox rows are committed."""
    async with sagas.transaction() as session:
        yield session
