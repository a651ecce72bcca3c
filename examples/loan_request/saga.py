"""The loan application saga: the one place where the whole flow of a loan request is visible.

new ──LoanRequested──▶ checking ──both checks in──▶ offered ──OfferAccepted──▶ approved
                          │  └──picked for review──▶ in_review ──LoanReviewed──▶ offered
                          └──suspected, not creditworthy, or no answer in a day──▶ denied
offered ──day 7──▶ expired           (reminders to the customer on days 2 and 4)
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import update

from sagas import Saga, SagaContext, on

from ..timing import DAY, HOUR
from .messages import (
    AlertAuthorities,
    ChecksOverdue,
    CreditChecked,
    CriminalActivityChecked,
    LoanApproved,
    LoanDenied,
    LoanOffered,
    LoanRequested,
    LoanReviewed,
    OfferAccepted,
    OfferExpired,
    OfferExpiryDue,
    OfferReminderDue,
    RemindCustomer,
    RemindReviewer,
    ReviewLoan,
    ReviewReminderDue,
    RunCreditCheck,
    RunCriminalCheck,
)
from .tables import loans

#: About one request in four gets a human look before the offer.
REVIEW_SHARE = 4


class LoanData(BaseModel):
    applicant: str = ""
    amount: Decimal = Decimal(0)
    creditworthy: bool | None = None
    suspected: bool | None = None
    denial: str | None = None


def _on_check_result(result: type[CreditChecked | CriminalActivityChecked]) -> list[Any]:
    """The four ways a check result can leave `checking`; the first whose guards pass wins."""
    keep = {"prepare": "keep_result"}
    return [
        on(result, "checking", "denied", **keep, conditions=["both_in", "must_deny"], after="deny"),
        on(result, "checking", "in_review", **keep, conditions=["both_in", "picked"], after="ask"),
        on(result, "checking", "offered", **keep, conditions="both_in", after="offer"),
        on(result, "checking", None, **keep),  # still waiting for the other one
    ]


class LoanApplication(Saga[LoanData], name="loans.LoanApplication"):
    """Runs the credit and criminal-activity checks in parallel, then offers, reviews or denies."""

    states = [
        "new",
        "checking",
        "in_review",
        "offered",
        {"name": "approved", "final": True},
        {"name": "denied", "final": True},
        {"name": "expired", "final": True},
    ]
    transitions = [
        on(LoanRequested, "new", "checking", after="start_checks"),
        *_on_check_result(CreditChecked),
        *_on_check_result(CriminalActivityChecked),
        on(ChecksOverdue, "checking", "denied", after="checks_overdue"),
        on(LoanReviewed, "in_review", "offered", conditions="reviewer_approves", after="offer"),
        on(LoanReviewed, "in_review", "denied", after="review_refused"),
        on(ReviewReminderDue, "in_review", None, after="remind_reviewer"),
        on(OfferReminderDue, "offered", None, after="remind_customer"),
        on(OfferAccepted, "offered", "approved", after="approve"),
        on(OfferExpiryDue, "offered", "expired", after="expire"),
    ]
    correlation = {
        message: "loan_id"
        for message in (
            LoanRequested,
            CreditChecked,
            CriminalActivityChecked,
            ChecksOverdue,
            LoanReviewed,
            ReviewReminderDue,
            OfferReminderDue,
            OfferAccepted,
            OfferExpiryDue,
        )
    }

    # --- checking: both results, in either order, within a day ---

    def start_checks(self, ctx: SagaContext, request: LoanRequested) -> None:
        self.data.applicant, self.data.amount = request.applicant, request.amount
        who = {"loan_id": request.loan_id, "applicant": request.applicant}
        ctx.send(RunCreditCheck(**who, amount=request.amount), to="credit")
        ctx.send(RunCriminalCheck(**who), to="criminal")
        ctx.schedule("checks", ChecksOverdue(loan_id=request.loan_id), after=DAY)
        self._status(ctx, "checking")

    def keep_result(
        self, ctx: SagaContext, result: CreditChecked | CriminalActivityChecked
    ) -> None:
        if isinstance(result, CreditChecked):
            self.data.creditworthy = result.creditworthy
        else:
            self.data.suspected = result.suspected

    def both_in(self, ctx: SagaContext, _result: object) -> bool:
        return self.data.creditworthy is not None and self.data.suspected is not None

    def must_deny(self, ctx: SagaContext, _result: object) -> bool:
        return bool(self.data.suspected) or not self.data.creditworthy

    def picked(self, ctx: SagaContext, _result: object) -> bool:
        # Chosen by the loan id, not by chance at run time: a redelivered message decides alike.
        digest = hashlib.sha256(self.correlation_id.encode()).digest()
        return digest[0] % REVIEW_SHARE == 0

    def deny(self, ctx: SagaContext, _result: object) -> None:
        if self.data.suspected:
            ctx.send(
                AlertAuthorities(loan_id=self.correlation_id, applicant=self.data.applicant),
                to="email",
            )
            self._denied(ctx, "suspected of criminal activity")
        else:
            self._denied(ctx, "not creditworthy")

    def checks_overdue(self, ctx: SagaContext, _due: ChecksOverdue) -> None:
        self._denied(ctx, "the checks did not answer within a day")

    # --- manual review, with a reminder every 4 hours (3 at most) ---

    def ask(self, ctx: SagaContext, _result: object) -> None:
        ctx.send(
            ReviewLoan(
                loan_id=self.correlation_id, applicant=self.data.applicant, amount=self.data.amount
            ),
            to="reviews",
        )
        due = ReviewReminderDue(loan_id=self.correlation_id)
        ctx.schedule("review-reminder", due, every=4 * HOUR, times=3)
        self._status(ctx, "in review")

    def remind_reviewer(self, ctx: SagaContext, _due: ReviewReminderDue) -> None:
        ctx.send(RemindReviewer(loan_id=self.correlation_id), to="reviews")

    def reviewer_approves(self, ctx: SagaContext, review: LoanReviewed) -> bool:
        return review.approved

    def review_refused(self, ctx: SagaContext, _review: LoanReviewed) -> None:
        self._denied(ctx, "refused at manual review")

    # --- the offer: reminders on days 2 and 4, expiry on day 7 ---

    def offer(self, ctx: SagaContext, _cause: object) -> None:
        who = {"loan_id": self.correlation_id, "applicant": self.data.applicant}
        ctx.publish(LoanOffered(**who, amount=self.data.amount))
        loan = {"loan_id": self.correlation_id}
        ctx.schedule("offer-reminder", OfferReminderDue(**loan), every=2 * DAY, times=2)
        ctx.schedule("offer-expiry", OfferExpiryDue(**loan), after=7 * DAY)
        self._status(ctx, "offered")

    def remind_customer(self, ctx: SagaContext, _due: OfferReminderDue) -> None:
        ctx.send(
            RemindCustomer(loan_id=self.correlation_id, applicant=self.data.applicant),
            to="email",
        )

    def approve(self, ctx: SagaContext, _accepted: OfferAccepted) -> None:
        ctx.publish(
            LoanApproved(
                loan_id=self.correlation_id, applicant=self.data.applicant, amount=self.data.amount
            )
        )
        self._status(ctx, "approved")

    def expire(self, ctx: SagaContext, _due: OfferExpiryDue) -> None:
        ctx.publish(OfferExpired(loan_id=self.correlation_id, applicant=self.data.applicant))
        self._status(ctx, "expired")

    # --- shared ---

    def _denied(self, ctx: SagaContext, reason: str) -> None:
        self.data.denial = reason
        ctx.publish(
            LoanDenied(loan_id=self.correlation_id, applicant=self.data.applicant, reason=reason)
        )
        self._status(ctx, "denied")

    def _status(self, ctx: SagaContext, status: str) -> None:
        """The business row moves with the saga, in the same transaction."""
        assert ctx.session is not None
        ctx.session.execute(
            update(loans).where(loans.c.id == self.correlation_id).values(status=status)
        )
