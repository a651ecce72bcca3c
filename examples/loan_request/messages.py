"""The messages of the loan request system, one class per fact or request."""

from __future__ import annotations

from decimal import Decimal

from outbox import Command, Event
from sagas import Timeout

# --- the loan request service (the saga's own endpoint) ---


class LoanRequested(Event, type="loans.LoanRequested"):
    """A customer asked for a loan (the request service starts the saga with it)."""

    loan_id: str
    applicant: str
    amount: Decimal


class OfferAccepted(Event, type="loans.OfferAccepted"):
    """The customer accepted the offer."""

    loan_id: str


class LoanOffered(Event, type="loans.LoanOffered"):
    loan_id: str
    applicant: str
    amount: Decimal


class LoanApproved(Event, type="loans.LoanApproved"):
    loan_id: str
    applicant: str
    amount: Decimal


class LoanDenied(Event, type="loans.LoanDenied"):
    loan_id: str
    applicant: str
    reason: str


class OfferExpired(Event, type="loans.OfferExpired"):
    loan_id: str
    applicant: str


class OfferReminderDue(Timeout, type="loans.OfferReminderDue"):
    loan_id: str


class OfferExpiryDue(Timeout, type="loans.OfferExpiryDue"):
    loan_id: str


class ReviewReminderDue(Timeout, type="loans.ReviewReminderDue"):
    loan_id: str


class ReviewEscalationDue(Timeout, type="loans.ReviewEscalationDue"):
    """Every reminder went unanswered: the review goes to the head of lending."""

    loan_id: str


class ReviewDeadlineDue(Timeout, type="loans.ReviewDeadlineDue"):
    """Even the escalated review got no answer: the loan is denied rather than left waiting."""

    loan_id: str


# --- the credit and criminal-activity services ---


class RunCreditCheck(Command, type="credit.RunCreditCheck"):
    loan_id: str
    applicant: str
    amount: Decimal


class CreditChecked(Event, type="credit.CreditChecked"):
    loan_id: str
    creditworthy: bool


class RunCriminalCheck(Command, type="criminal.RunCriminalCheck"):
    loan_id: str
    applicant: str


class CriminalActivityChecked(Event, type="criminal.CriminalActivityChecked"):
    loan_id: str
    suspected: bool


# --- manual review and email ---


class ReviewLoan(Command, type="reviews.ReviewLoan"):
    """Ask a person to look at the request before an offer is made."""

    loan_id: str
    applicant: str
    amount: Decimal


class RemindReviewer(Command, type="reviews.RemindReviewer"):
    loan_id: str


class EscalateReview(Command, type="reviews.EscalateReview"):
    """Hand a review nobody answered to a supervisor."""

    loan_id: str
    applicant: str


class LoanReviewed(Event, type="reviews.LoanReviewed"):
    loan_id: str
    approved: bool


class EmailOffer(Command, type="email.EmailOffer"):
    """Mail the customer the offer the moment it is made."""

    loan_id: str
    applicant: str
    amount: Decimal
    valid_for_days: int


class RemindCustomer(Command, type="email.RemindCustomer"):
    loan_id: str
    applicant: str


class AlertAuthorities(Command, type="email.AlertAuthorities"):
    """Tell the authorities about an applicant suspected of criminal activity."""

    loan_id: str
    applicant: str
