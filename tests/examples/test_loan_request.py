"""The loan request example end to end, on SQLite and PostgreSQL, with simulated time."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from examples.loan_request.apps import accept_offer, apply_for_loan, apps, business
from examples.loan_request.messages import (
    AlertAuthorities,
    LoanApproved,
    LoanDenied,
    OfferExpired,
    RemindCustomer,
    RemindReviewer,
    ReviewLoan,
)
from examples.loan_request.saga import LoanApplication
from examples.loan_request.services import complete_review
from examples.loan_request.tables import emails, loans, review_tasks
from examples.timing import DAY, HOUR
from sagabox.demo import run_demo
from sagabox.testing import SagaHarness

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(params=[1, 8], ids=["one-by-one", "batches-of-8"])
def harness(empty_database_url: str, request: pytest.FixtureRequest) -> Iterator[SagaHarness]:
    """The example's services, their workers handling one message per transaction or eight."""
    with SagaHarness(
        *apps(), database=empty_database_url, business=[business], batch_size=request.param
    ) as harness:
        yield harness


def _apply(h: SagaHarness, loan_id: str, applicant: str, amount: int) -> None:
    with h.transaction() as session:
        apply_for_loan(
            session, h.apps[0], loan_id=loan_id, applicant=applicant, amount=Decimal(amount)
        )
    h.run_until_quiet()


def _status(h: SagaHarness, loan_id: str) -> str:
    return str(next(row.status for row in h.rows(loans) if row.id == loan_id))


def test_an_accepted_offer_is_approved_and_mailed(harness: SagaHarness) -> None:
    """L-1000 is not picked for review: offered at once, reminded on day 2, accepted on day 3."""
    _apply(harness, "L-1000", "Ada", 2_500)
    assert "offered" == harness.state(LoanApplication, "L-1000")
    harness.advance(3 * DAY)
    with harness.transaction() as session:
        accept_offer(session, harness.apps[0], "L-1000")
    harness.run_until_quiet()
    harness.advance(10 * DAY)
    assert "approved" == harness.state(LoanApplication, "L-1000") == _status(harness, "L-1000")
    assert 1 == len(harness.sent(RemindCustomer))
    assert ["Ada"] == [e.applicant for e in harness.published(LoanApproved)]
    assert [("Ada", "Your loan L-1000 of 2500 is approved")] == [
        (e.recipient, e.subject) for e in harness.rows(emails) if "approved" in e.subject
    ]


def test_a_suspect_is_denied_and_the_authorities_are_told(harness: SagaHarness) -> None:
    _apply(harness, "L-1002", "Mallory", 5_000)
    assert "denied" == _status(harness, "L-1002")
    assert ["Mallory"] == [c.applicant for c in harness.sent(AlertAuthorities)]
    assert {"authorities", "Mallory"} == {e.recipient for e in harness.rows(emails)}


def test_a_review_reminds_the_reviewer_until_done_then_the_offer_expires(
    harness: SagaHarness,
) -> None:
    """L-1001 is picked for review: reminders every 4 hours (3 at most) until the reviewer
    approves; the offer then expires after 7 days with reminders on days 2 and 4."""
    _apply(harness, "L-1001", "Bob", 8_000)
    assert 1 == len(harness.sent(ReviewLoan))
    harness.advance(9 * HOUR)
    assert 2 == len(harness.sent(RemindReviewer))
    assert [2] == [task.reminders for task in harness.rows(review_tasks)]
    with harness.transaction() as session:
        complete_review(session, "L-1001", approved=True)
    harness.run_until_quiet()
    harness.advance(8 * DAY)
    assert 2 == len(harness.sent(RemindReviewer))  # the third one was cancelled
    assert 2 == len(harness.sent(RemindCustomer))
    assert 1 == len(harness.published(OfferExpired))
    assert "expired" == _status(harness, "L-1001")


def test_checks_that_never_answer_deny_the_loan_after_a_day(empty_database_url: str) -> None:
    """Without the criminal-records service running, the join waits a day, then gives up."""
    running = [app for app in apps() if app.name != "criminal"]
    with SagaHarness(*running, database=empty_database_url, business=[business]) as h:
        _apply(h, "L-1000", "Ada", 2_500)
        h.advance(23 * HOUR)
        assert "checking" == h.state(LoanApplication, "L-1000")
        h.advance(HOUR)
        assert ["the checks did not answer within a day"] == [
            e.reason for e in h.published(LoanDenied)
        ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_demo_prints_the_timeline_and_the_final_states(empty_database_url: str) -> None:
    out = io.StringIO()
    assert 0 == run_demo("loan_request", database=empty_database_url, out=out)
    text = out.getvalue()
    assert "▶ Ada applies for a loan of 2500" in text
    assert "LoanApplication L-1001: checking → in_review" in text
    assert "── 7 days later ──" in text
    assert "LoanApplication L-1001: expired" in text.split("Final states:")[1]


def test_sagabox_demo_runs_as_a_program_with_no_server() -> None:
    """What `make demo` runs after installing: exit 0 and the timeline on stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "sagabox.cli", "demo", "loan_request"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    assert "Final states:" in result.stdout
    assert "to Bob          Your offer for loan L-1001 has expired" in result.stdout
