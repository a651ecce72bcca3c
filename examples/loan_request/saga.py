"""The loan application saga: the one place where the whole flow of a loan request is visible.

new ──LoanRequested──▶ checking ──both checks in──▶ offered ──OfferAccepted──▶ approved
                          │  └──picked for review──▶ in_review ──LoanReviewed──▶ offered
                          └──suspected, not creditworthy, or no answer in a day──▶ denied
in_review ──3 reminders, no answer──▶ escalated ──LoanReviewed──▶ offered (or denied;
                                                  no answer in 2 days: denied)
offered ──day 7──▶ expired    (the offer mailed at once; reminders on days 2 and 4)
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import update

from sagas import Saga, SagaContext, branch, join, on

from ..timing import DAY, HOUR
from .messages import (
    AlertAuthorities,
    CreditChecked,
    CriminalActivityChecked,
    EmailOffer,
    EscalateReview,
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
    ReviewDeadlineDue,
    ReviewEscalationDue,
    ReviewLoan,
    ReviewReminderDue,
    RunCreditCheck,
    RunCriminalCheck,
)
from .tables import loans

#: About one request in four gets a human look before the offer.
REVIEW_SHARE = 4
REVIEW_REMINDER, REVIEW_REMINDERS = 4 * HOUR, 3
ESCALATED_REVIEW_WITHIN = 2 * DAY
OFFER_DAYS = 7
#: The states where a review's answer decides.
REVIEWING = ["in_review", "escalated"]


class LoanData(BaseModel):
    applicant: str = ""
    amount: Decimal = Decimal(0)
    denial: str | None = None
    # The check results themselves are the join's parts: `self.part(CreditChecked)`.


class LoanApplication(Saga[LoanData], name="loans.LoanApplication"):
    """Runs the credit and criminal-activity checks in parallel, then offers, reviews or denies."""

    states = [
        "new",
        "checking",
        "in_review",
        "escalated",
        "offered",
        {"name": "approved", "final": True},
        {"name": "denied", "final": True},
        {"name": "expired", "final": True},
    ]
    transitions = [
        on(LoanRequested, "new", "checking", after="start_checks"),
        # Both results, in either order, within a day; the first branch whose guards pass wins.
        join(
            CreditChecked,
            CriminalActivityChecked,
            source="checking",
            into=[
                branch("denied", conditions="must_deny", after="deny"),
                branch("in_review", conditions="picked", after="ask"),
                branch("offered", after="offer"),
            ],
            within=DAY,
            on_timeout=branch("denied", after="checks_overdue"),
        ),
        on(LoanReviewed, REVIEWING, "offered", conditions="reviewer_approves", after="offer"),
        on(LoanReviewed, REVIEWING, "denied", after="review_refused"),
        on(ReviewReminderDue, "in_review", None, after="remind_reviewer"),
        on(ReviewEscalationDue, "in_review", "escalated", after="escalate"),
        on(ReviewDeadlineDue, "escalated", "denied", after="review_unanswered"),
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
            LoanReviewed,
            ReviewReminderDue,
            ReviewEscalationDue,
            ReviewDeadlineDue,
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
        self._status(ctx, "checking")

    def must_deny(self, ctx: SagaContext, _result: object) -> bool:
        credit, criminal = self._checks()
        return criminal.suspected or not credit.creditworthy

    def picked(self, ctx: SagaContext, _result: object) -> bool:
        # Chosen by the loan id, not by chance at run time: a redelivered message decides alike.
        digest = hashlib.sha256(self.correlation_id.encode()).digest()
        return digest[0] % REVIEW_SHARE == 0

    def deny(self, ctx: SagaContext, _result: object) -> None:
        if self._checks()[1].suspected:
            ctx.send(
                AlertAuthorities(loan_id=self.correlation_id, applicant=self.data.applicant),
                to="email",
            )
            self._denied(ctx, "suspected of criminal activity")
        else:
            self._denied(ctx, "not creditworthy")

    def checks_overdue(self, ctx: SagaContext, _due: object) -> None:
        self._denied(ctx, "the checks did not answer within a day")

    # --- manual review: a reminder every 4 hours (3 at most), then escalated ---

    def ask(self, ctx: SagaContext, _result: object) -> None:
        ctx.send(
            ReviewLoan(
                loan_id=self.correlation_id, applicant=self.data.applicant, amount=self.data.amount
            ),
            to="reviews",
        )
        due = ReviewReminderDue(loan_id=self.correlation_id)
        ctx.schedule("review-reminder", due, every=REVIEW_REMINDER, times=REVIEW_REMINDERS)
        escalation = ReviewEscalationDue(loan_id=self.correlation_id)
        ctx.schedule(
            "review-escalation", escalation, after=REVIEW_REMINDER * (REVIEW_REMINDERS + 1)
        )
        self._status(ctx, "in review")

    def remind_reviewer(self, ctx: SagaContext, _due: ReviewReminderDue) -> None:
        ctx.send(RemindReviewer(loan_id=self.correlation_id), to="reviews")

    def escalate(self, ctx: SagaContext, _due: ReviewEscalationDue) -> None:
        """No answer after every reminder: a supervisor decides, within two days."""
        ctx.send(EscalateReview(loan_id=self.correlation_id, applicant=self.data.applicant),
                 to="reviews")  # fmt: skip
        due = ReviewDeadlineDue(loan_id=self.correlation_id)
        ctx.schedule("review-deadline", due, after=ESCALATED_REVIEW_WITHIN)
        self._status(ctx, "escalated")

    def review_unanswered(self, ctx: SagaContext, _due: ReviewDeadlineDue) -> None:
        self._denied(ctx, "nobody reviewed it, even after escalation")

    def reviewer_approves(self, ctx: SagaContext, review: LoanReviewed) -> bool:
        return review.approved

    def review_refused(self, ctx: SagaContext, _review: LoanReviewed) -> None:
        self._denied(ctx, "refused at manual review")

    # --- the offer: mailed at once, reminders on days 2 and 4, expiry on day 7 ---

    def offer(self, ctx: SagaContext, _cause: object) -> None:
        who = {"loan_id": self.correlation_id, "applicant": self.data.applicant}
        ctx.publish(LoanOffered(**who, amount=self.data.amount))
        ctx.send(EmailOffer(**who, amount=self.data.amount, valid_for_days=OFFER_DAYS), to="email")
        loan = {"loan_id": self.correlation_id}
        ctx.schedule("offer-reminder", OfferReminderDue(**loan), every=2 * DAY, times=2)
        ctx.schedule("offer-expiry", OfferExpiryDue(**loan), after=OFFER_DAYS * DAY)
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

    def _checks(self) -> tuple[CreditChecked, CriminalActivityChecked]:
        credit, criminal = self.part(CreditChecked), self.part(CriminalActivityChecked)
        assert credit is not None  # the join completed
        assert criminal is not None
        return credit, criminal

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
