"""Sagas and messages the saga tests drive (defined once: type registries are process-wide)."""

from __future__ import annotations

import enum
from decimal import Decimal

from pydantic import BaseModel

from outbox import Command, Event
from sagas import Saga, SagaContext, on


class LoanRequested(Event, type="sagatest.LoanRequested"):
    loan_id: str
    amount: Decimal


class CreditChecked(Event, type="sagatest.CreditChecked"):
    loan_id: str
    ok: bool


class OfferAccepted(Event, type="sagatest.OfferAccepted"):
    loan_id: str


class RunCreditCheck(Command, type="sagatest.RunCreditCheck"):
    loan_id: str
    amount: Decimal


class LoanOffered(Event, type="sagatest.LoanOffered"):
    loan_id: str


class LoanDenied(Event, type="sagatest.LoanDenied"):
    loan_id: str


class LoanData(BaseModel):
    amount: Decimal = Decimal(0)
    credit_ok: bool | None = None


class LoanSaga(Saga[LoanData], name="sagatest.Loan"):
    """Request → credit check → offer or denial → acceptance."""

    states = [
        "new",
        "checking",
        "offered",
        {"name": "accepted", "final": True},
        {"name": "denied", "final": True},
    ]
    transitions = [
        on(LoanRequested, "new", "checking", after="request_check"),
        on(CreditChecked, "checking", "offered", conditions="credit_ok", after="offer"),
        on(CreditChecked, "checking", "denied", unless="credit_ok", after="deny"),
        on(OfferAccepted, "offered", "accepted"),
    ]
    correlation = {LoanRequested: "loan_id", CreditChecked: "loan_id", OfferAccepted: "loan_id"}
    # A second credit result after the offer (a duplicate check) changes nothing.
    ignore = {CreditChecked: ["offered"]}

    def request_check(self, ctx: SagaContext, message: LoanRequested) -> None:
        self.data.amount = message.amount
        ctx.send(RunCreditCheck(loan_id=message.loan_id, amount=message.amount), to="credit")

    def credit_ok(self, ctx: SagaContext, message: CreditChecked) -> bool:
        return message.ok

    def offer(self, ctx: SagaContext, message: CreditChecked) -> None:
        self.data.credit_ok = True
        ctx.publish(LoanOffered(loan_id=message.loan_id))

    def deny(self, ctx: SagaContext, message: CreditChecked) -> None:
        self.data.credit_ok = False
        ctx.publish(LoanDenied(loan_id=message.loan_id))


class CriminalChecked(Event, type="sagatest.CriminalChecked"):
    loan_id: str
    clean: bool


class JoinData(BaseModel):
    credit: bool | None = None
    criminal: bool | None = None
    concluded: bool = False


class ChecksJoin(Saga[JoinData], name="sagatest.ChecksJoin"):
    """Both results are needed, in either order: either one may create the saga."""

    states = [
        "new",
        "credit_done",
        "criminal_done",
        {"name": "both_done", "final": True, "on_enter": "conclude"},
    ]
    transitions = [
        on(CreditChecked, "new", "credit_done", after="keep_credit"),
        on(CriminalChecked, "new", "criminal_done", after="keep_criminal"),
        on(CriminalChecked, "credit_done", "both_done", after="keep_criminal"),
        on(CreditChecked, "criminal_done", "both_done", after="keep_credit"),
    ]
    correlation = {CreditChecked: "loan_id", CriminalChecked: "loan_id"}

    def keep_credit(self, ctx: SagaContext, message: CreditChecked) -> None:
        self.data.credit = message.ok

    def keep_criminal(self, ctx: SagaContext, message: CriminalChecked) -> None:
        self.data.criminal = message.clean

    def conclude(self, ctx: SagaContext, message: CreditChecked | CriminalChecked) -> None:
        self.data.concluded = True


class CounterOpened(Event, type="sagatest.CounterOpened"):
    key: str


class Ping(Event, type="sagatest.Ping"):
    key: str


class CounterData(BaseModel):
    pings: int = 0


class Counter(Saga[CounterData], name="sagatest.Counter"):
    """Counts pings with an internal transition: the state stays, the data changes."""

    states = ["new", "open"]
    transitions = [
        on(CounterOpened, "new", "open"),
        on(Ping, "open", None, after="count"),
    ]
    correlation = {CounterOpened: "key", Ping: "key"}
    on_not_found = "ignore"

    def count(self, ctx: SagaContext, message: Ping) -> None:
        self.data.pings += 1


class Phase(enum.Enum):
    DRAFT = "d"
    SUBMITTED = "s"
    DONE = "x"


class DocSubmitted(Event, type="sagatest.DocSubmitted"):
    doc: str


class DocApproved(Event, type="sagatest.DocApproved"):
    doc: str


class DocData(BaseModel):
    approvals: int = 0


class DocReview(Saga[DocData], name="sagatest.DocReview"):
    """States as an Enum: stored by member name, restored as the member."""

    states = Phase
    transitions = [
        on(DocSubmitted, Phase.DRAFT, Phase.SUBMITTED),
        on(DocApproved, Phase.SUBMITTED, Phase.DONE),
    ]
    correlation = {DocSubmitted: "doc", DocApproved: "doc"}
    on_not_found = "dead_letter"
