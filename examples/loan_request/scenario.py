"""Six customers apply for a loan; `sagabox demo loan_request` plays it with simulated time.

Ada is offered a loan (mailed at once) and accepts on day 3. Bob is picked for a manual review
that takes the reviewer a reminder to get done; he never answers his offer, which expires on
day 7. Mallory is on the watchlist: denied, and the authorities are told. Carol asks for more
than her credit allows. The credit bureau never answers about Dave: after a day the checks'
deadline denies him. Erin's review gets no answer after three reminders, so it is escalated to
the supervisor, who approves it; Erin accepts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TextIO

from sagabox.demo import Scene

from ..timing import DAY, HOUR
from .apps import accept_offer, apply_for_loan, apps, business
from .services import complete_review
from .tables import emails, loans

__all__ = ["TITLE", "apps", "business", "play", "report"]

TITLE = "loan requests: parallel checks, manual review, offer reminders and expiry"


def play(stage: Scene) -> None:
    loans_app = stage.app("loans")
    for loan_id, applicant, amount in [
        ("L-1000", "Ada", Decimal(2_500)),
        ("L-1001", "Bob", Decimal(8_000)),
        ("L-1002", "Mallory", Decimal(5_000)),
        ("L-1003", "Carol", Decimal(50_000)),
        ("L-1004", "Dave", Decimal(3_000)),
        ("L-1005", "Erin", Decimal(4_000)),
    ]:
        with stage.request(f"{applicant} applies for a loan of {amount}") as session:
            apply_for_loan(session, loans_app, loan_id=loan_id, applicant=applicant, amount=amount)
    stage.advance(6 * HOUR)
    with stage.request("the reviewer approves Bob's request") as session:
        complete_review(session, "L-1001", approved=True)
    stage.advance(2 * DAY)
    with stage.request("the supervisor approves Erin's escalated request") as session:
        complete_review(session, "L-1005", approved=True)
    with stage.request("Ada accepts her offer") as session:
        accept_offer(session, loans_app, "L-1000")
    with stage.request("Erin accepts hers") as session:
        accept_offer(session, loans_app, "L-1005")
    stage.advance(7 * DAY)


def report(stage: Scene, out: TextIO) -> None:
    print("\nThe loans table:", file=out)
    for loan in stage.rows(loans):
        print(f"  {loan.id}  {loan.applicant:<8} {loan.amount:>9}  {loan.status}", file=out)
    print("\nEmails sent:", file=out)
    for email in stage.rows(emails):
        print(f"  to {email.recipient:<12} {email.subject}", file=out)
