"""A saga that joins a credit and an identity check within a day, for the join tests.

Its guards choose between three ways out once both are in (`denied`, `review`, `approved`),
as the loan example does; the identity service stays silent for applicants named "Ghost".
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from outbox import Command, Event, HandlerContext, handles
from sagabox import App
from sagas import Saga, SagaContext, branch, join, on


class Applied(Event, type="jointest.Applied"):
    case_id: str
    name: str
    score: int


class CheckCredit(Command, type="jointest.CheckCredit"):
    case_id: str
    score: int


class CheckIdentity(Command, type="jointest.CheckIdentity"):
    case_id: str
    name: str


class CreditScored(Event, type="jointest.CreditScored"):
    case_id: str
    good: bool


class IdentityVerified(Event, type="jointest.IdentityVerified"):
    case_id: str
    genuine: bool


class Case(BaseModel):
    outcome: str = ""


class Application(Saga[Case], name="jointest.Application"):
    """Waits in `checking` for both results, in any order, for a day."""

    states = [
        "new",
        "checking",
        {"name": "denied", "final": True},
        {"name": "review", "final": True},
        {"name": "approved", "final": True},
        {"name": "timed_out", "final": True},
    ]
    transitions = [
        on(Applied, "new", "checking", after="run_checks"),
        join(
            CreditScored,
            IdentityVerified,
            source="checking",
            into=[
                branch("denied", unless="genuine", after="decide"),
                branch("review", unless="good", after="decide"),
                branch("approved", after="decide"),
            ],
            within=timedelta(days=1),
            on_timeout=branch("timed_out", after="give_up"),
        ),
    ]
    correlation = {Applied: "case_id", CreditScored: "case_id", IdentityVerified: "case_id"}

    def run_checks(self, ctx: SagaContext, applied: Applied) -> None:
        ctx.send(CheckCredit(case_id=applied.case_id, score=applied.score), to="checks")
        ctx.send(CheckIdentity(case_id=applied.case_id, name=applied.name), to="checks")

    def genuine(self, ctx: SagaContext, _part: object) -> bool:
        identity = self.part(IdentityVerified)
        return identity is not None and identity.genuine

    def good(self, ctx: SagaContext, _part: object) -> bool:
        credit = self.part(CreditScored)
        return credit is not None and credit.good

    def decide(self, ctx: SagaContext, part: CreditScored | IdentityVerified) -> None:
        self.data.outcome = f"decided on {type(part).__name__}"

    def give_up(self, ctx: SagaContext, _due: object) -> None:
        self.data.outcome = "no answer in a day"


@handles(CheckCredit)
def check_credit(ctx: HandlerContext, command: CheckCredit) -> None:
    ctx.publish(CreditScored(case_id=command.case_id, good=command.score >= 600))


@handles(CheckIdentity)
def check_identity(ctx: HandlerContext, command: CheckIdentity) -> None:
    if command.name != "Ghost":
        ctx.publish(IdentityVerified(case_id=command.case_id, genuine=command.name != "Mallory"))


def apps(
    *,
    with_checks: bool = True,
    database: str | None = None,
    broker: str | None = None,
    exchange: str = "sagabox",
) -> list[App]:
    """The application service; with `with_checks`, the checks service that answers it."""
    where = {"database": database, "broker": broker, "exchange": exchange}
    found = [
        App("cases", sagas=[Application], inputs=[Applied, CreditScored, IdentityVerified],
            **where),  # type: ignore[arg-type]
    ]  # fmt: skip
    if with_checks:
        found.append(App("checks", handlers=[check_credit, check_identity], **where))  # type: ignore[arg-type]
    return found
