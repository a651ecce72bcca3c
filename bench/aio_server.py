"""The service behind (i): one FastAPI app starting a saga per request, two ways on one server.

`POST /async/{id}` uses the async API on an `AsyncSession` (psycopg async); `POST /sync/{id}`
is a plain `def` path operation, which FastAPI runs in its thread pool, using the sync API on a
`Session`. Both write a business row and start the same saga, with pools of the same size.

    BENCH_DATABASE_URL=postgresql://... uvicorn bench.aio_server:make_api --factory
"""

from __future__ import annotations

import os
from decimal import Decimal

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Column, MetaData, Numeric, String, Table, insert
from sqlalchemy.orm import Session

from outbox import Command, Event
from outbox.aio import make_async_engine
from outbox.database import make_engine
from sagabox import App
from sagabox.fastapi import Sagas, Transaction, lifespan
from sagas import Saga, SagaContext, on

#: Connections per pool, the same for both APIs (the sync side's thread pool is FastAPI's 40).
POOL = 20
#: A request waits this long for a connection: 1,000 at once queue for 20, which takes a while
#: on a busy machine, and the run measures throughput, not the pool's default 30 s limit.
POOL_TIMEOUT = 600

business = MetaData()
loans = Table(
    "aio_bench_loans",
    business,
    Column("id", String(40), primary_key=True),
    Column("amount", Numeric(12, 2), nullable=False),
)


class Applied(Event, type="aiobench.Applied"):
    loan_id: str
    amount: Decimal


class Check(Command, type="aiobench.Check"):
    loan_id: str


class Data(BaseModel):
    amount: Decimal = Decimal(0)


class Application(Saga[Data], name="aiobench.Application"):
    """One transition from the request, sending one command: a typical saga start."""

    states = ["new", "checking", {"name": "done", "final": True}]
    transitions = [on(Applied, "new", "checking", after="ask")]
    correlation = {Applied: "loan_id"}

    def ask(self, ctx: SagaContext, applied: Applied) -> None:
        self.data.amount = applied.amount
        ctx.send(Check(loan_id=applied.loan_id), to="aiobench-credit")


def make_api() -> FastAPI:
    """The app, on $BENCH_DATABASE_URL."""
    url = os.environ["BENCH_DATABASE_URL"]
    app = App("aiobench", sagas=[Application], database=url)
    app.aio.engine = make_async_engine(
        url, pool_size=POOL, max_overflow=0, pool_timeout=POOL_TIMEOUT
    )
    sync_engine = make_engine(url, pool_size=POOL, max_overflow=0, pool_timeout=POOL_TIMEOUT)
    api = FastAPI(lifespan=lifespan(app))

    @api.post("/async/{loan_id}", status_code=201)
    async def start_async(loan_id: str, session: Transaction, sagas: Sagas) -> str:
        await session.execute(insert(loans).values(id=loan_id, amount=Decimal(100)))
        saga = await sagas.start(
            session, Application, Applied(loan_id=loan_id, amount=Decimal(100))
        )
        return saga.state_name

    @api.post("/sync/{loan_id}", status_code=201)
    def start_sync(loan_id: str) -> str:
        with Session(sync_engine) as session, session.begin():
            session.execute(insert(loans).values(id=loan_id, amount=Decimal(100)))
            saga = app.start(session, Application, Applied(loan_id=loan_id, amount=Decimal(100)))
        return saga.state_name

    @api.get("/health")
    async def health() -> str:
        return "ok"

    return api
