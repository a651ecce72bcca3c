"""An async loan service, served by FastAPI and by Litestar, and the credit endpoint that answers
it: what the asyncio tests run behind a real uvicorn server.

POST /loans writes the loan row and starts its saga in the request's transaction (with
`"fail": true` it fails after the start); GET /loans/{id} reads the saga's state.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, MetaData, Numeric, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from outbox import Command, Event, HandlerContext, handles
from sagabox import App
from sagabox.aio import AsyncApp
from sagas import Saga, SagaContext, on

business = MetaData()
loans = Table(
    "aio_loans",
    business,
    Column("id", String(20), primary_key=True),
    Column("amount", Numeric(12, 2), nullable=False),
)
credit_checks = Table(
    "aio_credit_checks",
    business,
    Column("loan_id", String(20), primary_key=True),
)


class LoanApplied(Event, type="aiosvc.LoanApplied"):
    loan_id: str
    amount: Decimal


class CheckCredit(Command, type="aiosvc.CheckCredit"):
    loan_id: str
    amount: Decimal


class CreditAnswered(Event, type="aiosvc.CreditAnswered"):
    loan_id: str
    ok: bool


class ApplicationData(BaseModel):
    amount: Decimal = Decimal(0)


class Application(Saga[ApplicationData], name="aiosvc.Application"):
    """Applied → checking → approved or refused, on the credit endpoint's answer."""

    states = [
        "new",
        "checking",
        {"name": "approved", "final": True},
        {"name": "refused", "final": True},
    ]
    transitions = [
        on(LoanApplied, "new", "checking", after="ask_credit"),
        on(CreditAnswered, "checking", "approved", conditions="ok"),
        on(CreditAnswered, "checking", "refused", unless="ok"),
    ]
    correlation = {LoanApplied: "loan_id", CreditAnswered: "loan_id"}
    credit_endpoint = "aiosvc-credit"

    def ask_credit(self, ctx: SagaContext, applied: LoanApplied) -> None:
        self.data.amount = applied.amount
        ctx.send(
            CheckCredit(loan_id=applied.loan_id, amount=applied.amount), to=self.credit_endpoint
        )

    def ok(self, ctx: SagaContext, answer: CreditAnswered) -> bool:
        return answer.ok


@handles(CheckCredit)
def check_credit(ctx: HandlerContext, command: CheckCredit) -> None:
    """The credit bureau: up to 5,000 is fine. It notes each check, to count them."""
    ctx.session.execute(insert(credit_checks).values(loan_id=command.loan_id))
    ctx.publish(CreditAnswered(loan_id=command.loan_id, ok=command.amount <= 5000))


def make_apps(database: str, broker: str) -> tuple[App, App]:
    """The loan service's endpoint and the credit endpoint, on an exchange of their own."""
    exchange = f"aio-{uuid.uuid4().hex[:8]}"
    service = App(
        "aiosvc-loans", sagas=[Application], database=database, broker=broker, exchange=exchange
    )
    credit = App(
        Application.credit_endpoint,
        handlers=[check_credit],
        database=database,
        broker=broker,
        exchange=exchange,
    )
    return service, credit


class LoanIn(BaseModel):
    loan_id: str
    amount: Decimal
    fail: bool = False


class RequestFailed(Exception):
    """The request fails after it started the saga."""


async def apply(session: AsyncSession, sagas: AsyncApp, body: LoanIn) -> dict[str, Any]:
    """What both frameworks' POST /loans does, in the request's transaction."""
    await session.execute(insert(loans).values(id=body.loan_id, amount=body.amount))
    saga = await sagas.start(
        session, Application, LoanApplied(loan_id=body.loan_id, amount=body.amount)
    )
    if body.fail:
        raise RequestFailed(f"loan {body.loan_id}: failing after the saga started")
    return {"loan_id": body.loan_id, "state": saga.state_name}


async def status(session: AsyncSession, sagas: AsyncApp, loan_id: str) -> dict[str, Any] | None:
    """What both frameworks' GET /loans/{id} answers."""
    saga = await sagas.load(session, Application, loan_id)
    if saga is None:
        return None
    return {"loan_id": loan_id, "state": saga.state_name, "version": saga.version}
