"""FastAPI integration: a lifespan that gives the API an App's async face, and the dependencies
a path operation takes to start sagas in its request's transaction.

    loans = App("loans", sagas=[LoanSaga], database="postgresql://...")
    api = FastAPI(lifespan=lifespan(loans))

    @api.post("/loans", status_code=201)
    async def request_loan(body: LoanIn, session: Transaction, sagas: Sagas) -> dict[str, str]:
        session.add(Loan(id=body.loan_id, amount=body.amount))
        saga = await sagas.start(session, LoanSaga, LoanRequested(**body.model_dump()))
        return {"state": saga.state_name}

`Transaction` commits when the path operation returns and before the response is sent
(FastAPI's `scope="function"`), so a 2xx answer means the business row, the saga and its
outbox rows are committed, and an exception (an `HTTPException` too) rolls all of them back.
Needs `pip install 'sagabox[fastapi]'`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated

try:
    from fastapi import Depends, FastAPI, Request
    from sqlalchemy.ext.asyncio import AsyncSession
except ImportError as exc:  # an optional extra: say which install line brings it
    raise ImportError(
        f"sagabox.fastapi needs FastAPI ({exc}): pip install 'sagabox[fastapi]'"
    ) from exc

from sagabox.aio import AsyncApp
from sagabox.aio_web import request_transaction, serving

if TYPE_CHECKING:
    from sagabox.app import App

_STATE = "sagabox"


def lifespan(
    app: App,
    then: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan serving `app` to the dependencies below, and closing its async engine
    at shutdown; `then` is the service's own lifespan, run inside it."""

    @asynccontextmanager
    async def run(api: FastAPI) -> AsyncIterator[None]:
        served = getattr(api.state, _STATE, None)
        if isinstance(served, AsyncApp) and served.app is not app:
            # Replacing it would hand every `Sagas` dependency the second App, silently.
            raise RuntimeError(
                f"this FastAPI app already serves the sagabox App {served.app.name!r} to its "
                f"dependencies; {app.name!r} cannot be served too: keep one lifespan, and use "
                f"the other App's async face directly (await {app.name}.aio.start(session, ...))"
            )
        async with serving(app) as face:
            setattr(api.state, _STATE, face)
            if then is None:
                yield
            else:
                async with then(api):
                    yield

    return run


async def sagas(request: Request) -> AsyncApp:
    """The App's async face (`start`, `handle`, `dispatch`, `load`), as a dependency.

    `async def` although it never awaits: FastAPI runs a plain `def` dependency in its thread
    pool, a thread hop on every request for a lookup."""
    found = getattr(request.app.state, _STATE, None)
    if not isinstance(found, AsyncApp):
        raise RuntimeError(
            "sagabox is not set up on this FastAPI app: create it as "
            "FastAPI(lifespan=sagabox.fastapi.lifespan(your_app))"
        )
    return found


async def transaction(app: Annotated[AsyncApp, Depends(sagas)]) -> AsyncIterator[AsyncSession]:
    """An `AsyncSession` in a transaction on the App's database, committed when the path
    operation returns, rolled back if it raises (see `sagabox.aio_web.request_transaction`)."""
    async with request_transaction(app) as session:
        yield session


#: The request's session, in its transaction: `session: Transaction`.
Transaction = Annotated[AsyncSession, Depends(transaction, scope="function")]
#: The App's async face: `sagas: Sagas`, then `await sagas.start(session, SagaType, message)`.
Sagas = Annotated[AsyncApp, Depends(sagas)]
