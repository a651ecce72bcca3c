"""`AsyncSagaRuntime`: start, advance and load sagas on an `AsyncSession` or `AsyncConnection`.

A thin seam, not a second runtime: saga actions stay synchronous decisions (they never await),
so each call runs the sync `SagaRuntime` inside SQLAlchemy's `run_sync`, on the caller's async
connection and in the caller's transaction. Needs `pip install 'sagabox[asyncio]'`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from outbox.aio import run_sync
from outbox.messages import Message
from sagas.definition import Saga
from sagas.outcomes import Handled
from sagas.runtime import SagaRuntime

if TYPE_CHECKING:
    from outbox.aio import AsyncExecutor

S = TypeVar("S", bound=Saga[Any])


class AsyncSagaRuntime:
    """The async face of a `SagaRuntime`: the same sagas, the same rows, awaited.

    Build it from saga classes, as a `SagaRuntime`, or around an existing runtime (an App's) so
    both faces share one registry.
    """

    def __init__(
        self,
        sagas: Iterable[type[Saga[Any]]] | SagaRuntime = (),
        *,
        endpoint: str | None = None,
    ) -> None:
        if isinstance(sagas, SagaRuntime):
            if endpoint is not None:
                raise ValueError("the runtime given already names its endpoint")
            self.sync = sagas
        else:
            self.sync = SagaRuntime(sagas, endpoint=endpoint)

    async def start(self, executor: AsyncExecutor, saga_type: type[S], message: Message) -> S:
        """Create a saga from `message` in the caller's transaction (see `SagaRuntime.start`)."""
        return await run_sync(executor, self.sync.start, saga_type, message)

    async def handle(self, executor: AsyncExecutor, message: Message) -> list[Handled]:
        """Deliver `message` to every interested saga (see `SagaRuntime.handle`)."""
        return await run_sync(executor, self.sync.handle, message)

    async def load(
        self, executor: AsyncExecutor, saga_type: type[S] | str, correlation_id: str
    ) -> S | None:
        """Read a saga instance (finished or not) without changing it."""
        return await run_sync(executor, self.sync.load, saga_type, correlation_id)
