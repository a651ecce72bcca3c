"""`sagabox sagas list | show | stuck` on the running loan example, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from examples.loan_request.apps import apply_for_loan, apps, business
from examples.timing import DAY, HOUR
from sagabox.cli import main
from sagabox.testing import SagaHarness

SPEC = "examples.loan_request.apps:apps"


@pytest.fixture
def loans(empty_database_url: str) -> Iterator[SagaHarness]:
    """Ada offered (L-1000), Bob in review (L-1001, reminders used up), Mallory denied (L-1002)."""
    with SagaHarness(*apps(), database=empty_database_url, business=[business]) as h:
        for loan_id, applicant in [("L-1000", "Ada"), ("L-1001", "Bob"), ("L-1002", "Mallory")]:
            with h.transaction() as session:
                apply_for_loan(
                    session, h.apps[0], loan_id=loan_id, applicant=applicant, amount=Decimal(900)
                )
            h.run_until_quiet()
        h.advance(13 * HOUR)
        yield h


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert 0 == main(list(argv))
    return capsys.readouterr().out


def test_sagas_list_filters_by_type_and_state(
    loans: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ("--db", loans.database)
    lines = _run(capsys, "sagas", "list", *db).splitlines()
    assert 3 == len(lines)
    assert "L-1002  denied (finished)" in "\n".join(lines)
    listed = _run(capsys, "sagas", "list", "--state", "in_review", "--json", *db)
    [bob] = [json.loads(line) for line in listed.splitlines()]
    assert ("loans.LoanApplication", "L-1001") == (bob["saga_type"], bob["correlation_id"])
    # A known type with nothing in that state is an empty list (an unknown type is an error).
    nothing = ("--type", "loans.LoanApplication", "--state", "nope")
    assert "no saga instances" in _run(capsys, "sagas", "list", *nothing, *db)


def test_sagas_show_tells_the_state_journal_timeouts_and_draws_the_path(
    loans: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(
        capsys, "sagas", "show", "loans.LoanApplication", "L-1000", "--app", SPEC,
        "--db", loans.database,
    )  # fmt: skip
    assert out.startswith("loans.LoanApplication L-1000: offered (v3)")
    assert "offer-reminder: due 2026-01-07 09:00:00, set in offered" in out
    assert "loans.OfferReminderDue → loans, due 2026-01-07 09:00:00" in out  # not yet shipped
    assert "loans.LoanRequested  new → checking  transition" in out
    assert "class new,checking,offered visited" in out  # the Mermaid diagram, path highlighted
    shown = json.loads(
        _run(capsys, "sagas", "show", "loans.LoanApplication", "L-1000", "--json",
             "--db", loans.database)
    )  # fmt: skip
    assert ["checking", "checking", "offered"] == [
        entry["to_state"] for entry in shown["journal"] if entry["outcome"] == "transition"
    ]
    assert {"offer-reminder", "offer-expiry"} == set(shown["timeouts"])


def test_sagas_show_of_an_unknown_instance_says_where_to_look(
    loans: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 1 == main(["sagas", "show", "loans.LoanApplication", "L-9", "--db", loans.database])
    assert "sagabox sagas list --type TYPE" in capsys.readouterr().err


def test_sagas_stuck_finds_what_nothing_will_move(
    loans: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bob's review went unanswered and was escalated, with a deadline pending, so nothing is
    stuck; once an operator cancels that deadline nothing will move him, and a day later he is
    stuck. Ada waits too, but her offer's reminders and expiry are pending, so she is not."""
    db = ("--db", loans.database)
    assert "nothing stuck" in _run(capsys, "sagas", "stuck", "--older-than", "1d", *db)
    loans.advance(DAY)
    assert "nothing stuck" in _run(capsys, "sagas", "stuck", "--older-than", "1d", *db)
    deadline = ("loans.LoanApplication", "L-1001", "review-deadline", "--actor", "test")
    _run(capsys, "timeouts", "cancel", *deadline, *db)
    loans.advance(DAY)
    stuck = _run(capsys, "sagas", "stuck", "--older-than", "1d", "--json", *db)
    assert ["L-1001"] == [json.loads(line)["correlation_id"] for line in stuck.splitlines()]
