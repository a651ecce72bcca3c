"""Message classes shared by the tests (defined once: the type registry is process-wide)."""

from __future__ import annotations

from decimal import Decimal

from outbox import Command, Event


class LoanRequested(Event, type="tests.LoanRequested"):
    """A customer asked for a loan."""

    loan_id: str
    amount: Decimal
    applicant: str


class RunCreditCheck(Command, type="tests.RunCreditCheck", version=2):
    """Ask the credit bureau about an applicant."""

    loan_id: str
    applicant: str
    bureau: str
