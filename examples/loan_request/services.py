"""The other services of the system, each as plain handlers: stand-ins for real ones.

The credit bureau and the criminal-records check answer at once (except that the bureau never
answers about an applicant in `UNANSWERED`: a lost request, say); the email service writes its
mail to a table (and, choreographed, reacts to the saga's outcome events on its own); the review
service opens a task for a person, who answers through `complete_review`, and hands a review
nobody answered to a supervisor.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from outbox import HandlerContext, Outbox, clock, handles

from .messages import (
    AlertAuthorities,
    CreditChecked,
    CriminalActivityChecked,
    EmailOffer,
    EscalateReview,
    LoanApproved,
    LoanDenied,
    LoanReviewed,
    OfferExpired,
    RemindCustomer,
    RemindReviewer,
    ReviewLoan,
    RunCreditCheck,
    RunCriminalCheck,
)
from .tables import emails, review_tasks

CREDIT_LIMIT = Decimal(10_000)
WATCHLIST = frozenset({"Mallory"})
UNANSWERED = frozenset({"Dave"})


@handles(RunCreditCheck)
def check_credit(ctx: HandlerContext, command: RunCreditCheck) -> None:
    if command.applicant in UNANSWERED:
        return  # the saga's one-day deadline on the checks settles it
    ctx.publish(CreditChecked(loan_id=command.loan_id, creditworthy=command.amount <= CREDIT_LIMIT))


@handles(RunCriminalCheck)
def check_criminal_records(ctx: HandlerContext, command: RunCriminalCheck) -> None:
    ctx.publish(
        CriminalActivityChecked(loan_id=command.loan_id, suspected=command.applicant in WATCHLIST)
    )


def _mail(ctx: HandlerContext, recipient: str, subject: str) -> None:
    ctx.session.execute(
        insert(emails).values(recipient=recipient, subject=subject, sent_at=clock.now())
    )


@handles(LoanApproved, LoanDenied, OfferExpired)
def email_the_outcome(ctx: HandlerContext, event: LoanApproved | LoanDenied | OfferExpired) -> None:
    """Choreography: the email service reacts to the outcome; the saga does not know it."""
    if isinstance(event, LoanApproved):
        _mail(ctx, event.applicant, f"Your loan {event.loan_id} of {event.amount} is approved")
    elif isinstance(event, LoanDenied):
        _mail(ctx, event.applicant, f"Your loan {event.loan_id} was denied: {event.reason}")
    else:
        _mail(ctx, event.applicant, f"Your offer for loan {event.loan_id} has expired")


@handles(EmailOffer)
def email_offer(ctx: HandlerContext, command: EmailOffer) -> None:
    _mail(
        ctx,
        command.applicant,
        f"Your loan {command.loan_id} of {command.amount} is offered: accept within "
        f"{command.valid_for_days} days",
    )


@handles(RemindCustomer)
def remind_customer(ctx: HandlerContext, command: RemindCustomer) -> None:
    _mail(ctx, command.applicant, f"Your offer for loan {command.loan_id} is waiting")


@handles(AlertAuthorities)
def alert_authorities(ctx: HandlerContext, command: AlertAuthorities) -> None:
    _mail(ctx, "authorities", f"Loan {command.loan_id}: {command.applicant} is suspected")


@handles(ReviewLoan)
def open_review_task(ctx: HandlerContext, command: ReviewLoan) -> None:
    ctx.session.execute(insert(review_tasks).values(loan_id=command.loan_id, reminders=0))


@handles(RemindReviewer)
def remind_reviewer(ctx: HandlerContext, command: RemindReviewer) -> None:
    ctx.session.execute(
        update(review_tasks)
        .where(review_tasks.c.loan_id == command.loan_id)
        .values(reminders=review_tasks.c.reminders + 1)
    )
    _mail(ctx, "reviewers", f"Loan {command.loan_id} still waits for a review")


@handles(EscalateReview)
def escalate_review(ctx: HandlerContext, command: EscalateReview) -> None:
    _mail(ctx, "supervisor", f"Loan {command.loan_id} ({command.applicant}) waits for your review")


def complete_review(session: Session, loan_id: str, *, approved: bool) -> None:
    """What the reviewer's screen does: close the task and tell the saga, in one transaction."""
    session.execute(review_tasks.delete().where(review_tasks.c.loan_id == loan_id))
    Outbox(session).add(LoanReviewed(loan_id=loan_id, approved=approved, correlation_id=loan_id))
