"""The endpoints of the loan system, and the request service's own API."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.orm import Session

from sagabox import App

from . import services
from .messages import LoanRequested, LoanReviewed, OfferAccepted
from .saga import LoanApplication
from .tables import business, loans

__all__ = ["accept_offer", "apply_for_loan", "apps", "business"]


def apps() -> list[App]:
    """One App per service; in production each would run in its own process and database."""
    return [
        # Customers apply and accept through the loan service's web pages.
        App("loans", sagas=[LoanApplication], inputs=[LoanRequested, OfferAccepted]),
        App("credit", handlers=[services.check_credit]),
        App("criminal", handlers=[services.check_criminal_records]),
        App(
            "email",
            handlers=[
                services.email_offer,
                services.email_the_outcome,
                services.remind_customer,
                services.alert_authorities,
            ],
        ),
        App(
            "reviews",
            handlers=[
                services.open_review_task,
                services.remind_reviewer,
                services.escalate_review,
            ],
            inputs=[LoanReviewed],  # the reviewer's screen (services.complete_review)
        ),
    ]


def apply_for_loan(
    session: Session, app: App, *, loan_id: str, applicant: str, amount: Decimal
) -> None:
    """The request service's POST /loans: the loan row and the saga commit together."""
    session.execute(
        insert(loans).values(id=loan_id, applicant=applicant, amount=amount, status="requested")
    )
    request = LoanRequested(loan_id=loan_id, applicant=applicant, amount=amount)
    app.start(session, LoanApplication, request)


def accept_offer(session: Session, app: App, loan_id: str) -> None:
    """The customer clicks "accept": handled right away, in the request's transaction."""
    app.runtime.handle(session, OfferAccepted(loan_id=loan_id))
