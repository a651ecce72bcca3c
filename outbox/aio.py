"""The outbox and inbox on an `AsyncSession` or `AsyncConnection`: a thin seam over the sync code.

Each call runs the same synchronous writer inside `run_sync`, SQLAlchemy's own bridge: the
statements go through the async driver (aiosqlite, psycopg async) on the caller's connection, in
the caller's transaction, and nothing is committed here. There is no second implementation to
drift from the first: what the sync `Outbox` writes, `AsyncOutbox` writes byte for byte.

Needs the asyncio extra: `pip install 'sagabox[asyncio]'`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from outbox.database import configure_sqlite, database_url
from outbox.envelope import Envelope
from outbox.errors import AsyncSessionGiven
from outbox.inbox import Inbox
from outbox.messages import Message
from outbox.sync_only import is_async_executor
from outbox.writer import Outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    AsyncExecutor = AsyncSession | AsyncConnection

P = ParamSpec("P")
T = TypeVar("T")

INSTALL = "pip install 'sagabox[asyncio]'"

#: Sync driver → the async driver of the same database. psycopg 3 is one package for both.
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


async def run_sync(
    executor: AsyncExecutor,
    func: Callable[Concatenate[Session | Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Call `func(sync_executor, ...)` on the sync side of an `AsyncSession`/`AsyncConnection`.

    A sync `Session` or `Connection` here is a mistake the other way round: it is refused with
    the sync API's name rather than failing on a missing `run_sync`.

    A call, once begun, runs to its end even if the awaiting task is cancelled (a request
    timing out, a client gone): the cancellation is re-raised when the call's statements are
    done, so the caller's transaction rolls back on a connection at rest. Cancelled halfway,
    a statement would be abandoned in the driver: on aiosqlite an `INSERT ... RETURNING` left
    so keeps SQLite's write lock, and every other writer then fails with "database is locked".
    """
    if not is_async_executor(executor):
        raise AsyncSessionGiven(
            f"the async API got {type(executor).__name__}, a synchronous one: call the sync "
            "API (Outbox, Inbox, SagaRuntime, App.start) with it, or pass an AsyncSession"
        )
    call = asyncio.ensure_future(executor.run_sync(func, *args, **kwargs))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await _run_to_its_end(call)
        raise


async def _run_to_its_end(call: asyncio.Future[Any]) -> None:
    """Wait for `call` to finish however often the waiting task is cancelled meanwhile (anyio
    cancels again at every await); its own outcome is dropped: the caller is cancelled."""
    while not call.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([call])
    if not call.cancelled():
        call.exception()  # retrieved, so asyncio does not log it as never retrieved


class AsyncOutbox:
    """`Outbox` for an `AsyncSession` or `AsyncConnection`, in the caller's transaction."""

    def __init__(self, executor: AsyncExecutor) -> None:
        self._executor = executor

    async def add(
        self,
        message: Message,
        *,
        destination: str | None = None,
        partition_key: str | None = None,
        deliver_at: datetime | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UUID:
        """Insert `message` for delivery (see `Outbox.add`) and return its id."""
        return await run_sync(
            self._executor,
            lambda sync: Outbox(sync).add(
                message,
                destination=destination,
                partition_key=partition_key,
                deliver_at=deliver_at,
                headers=headers,
            ),
        )

    async def add_envelope(
        self,
        envelope: Envelope,
        *,
        destination: str,
        partition_key: str | None,
        deliver_at: datetime | None = None,
    ) -> None:
        """Insert an already encoded message (see `Outbox.add_envelope`)."""
        await run_sync(
            self._executor,
            lambda sync: Outbox(sync).add_envelope(
                envelope,
                destination=destination,
                partition_key=partition_key,
                deliver_at=deliver_at,
            ),
        )


class AsyncInbox:
    """`Inbox` for an `AsyncSession` or `AsyncConnection`, in the caller's transaction."""

    def __init__(self, executor: AsyncExecutor, consumer: str) -> None:
        if not consumer:
            raise ValueError("an inbox needs a consumer name (the endpoint or handler's name)")
        self._executor = executor
        self._consumer = consumer

    async def record(self, message_id: UUID) -> bool:
        """Record `message_id`; True if it is new, False if it was processed before."""
        return await run_sync(
            self._executor, lambda sync: Inbox(sync, self._consumer).record(message_id)
        )

    async def record_many(self, message_ids: Iterable[UUID]) -> set[UUID]:
        """Record several ids in one statement; return those that are new."""
        ids = list(message_ids)
        return await run_sync(
            self._executor, lambda sync: Inbox(sync, self._consumer).record_many(ids)
        )

    async def seen(self, message_id: UUID) -> bool:
        """Tell whether `message_id` was recorded, without recording it."""
        return await run_sync(
            self._executor, lambda sync: Inbox(sync, self._consumer).seen(message_id)
        )


def async_database_url(url: str | URL) -> URL:
    """The URL with the async driver of its database: `sqlite:///x.db` → `sqlite+aiosqlite`,
    `postgresql://` → `postgresql+psycopg` (async-capable). An async driver given stays."""
    parsed = database_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername=ASYNC_DRIVERS["sqlite"])
    return parsed


def make_async_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An `AsyncEngine` set up as `make_engine` sets up a sync one (SQLite: WAL, BEGIN
    IMMEDIATE, a busy timeout), on the async driver of the URL's database."""
    try:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(async_database_url(url), **kwargs)
    except ImportError as exc:  # aiosqlite or greenlet missing
        raise ImportError(f"async engines need the asyncio extra ({exc}): {INSTALL}") from exc
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine.sync_engine)
    return engine
