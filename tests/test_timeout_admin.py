"""Operator actions on pending timeouts, on every backend: cancel, reschedule, fire now, the CLI,
and the bookkeeping that keeps a cancelled or moved timeout from ever firing from a stale copy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from outbox.operator_log import recent_actions
from outbox.tables import outbox_messages
from sagabox.cli import main
from sagabox.testing import DEFAULT_START, SagaHarness
from sagas.errors import TimeoutAlreadySent, TimeoutNotPending
from sagas.timeout_admin import (
    cancel_timeout,
    fire_timeout,
    list_timeouts,
    reschedule_timeout,
)
from tests.offer_app import CustomerReminded, OfferMade, OfferSaga, make_app

DAY = timedelta(days=1)
OFFER = OfferSaga.saga_type


@pytest.fixture
def offers(database_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(make_app(), database=database_url) as harness:
        harness.dispatch(OfferMade(offer_id="O-1"))
        yield harness


def _outbox_types(h: SagaHarness) -> list[str]:
    return sorted(row.type for row in h.rows(outbox_messages))


def test_list_shows_pending_timeouts_soonest_first(offers: SagaHarness) -> None:
    """Both of the offer's timeouts are listed, the reminder (day 2) before the expiry (day 7)."""
    with offers.transaction() as session:
        entries = list_timeouts(session)
        soon = list_timeouts(session, due_before=DEFAULT_START + 3 * DAY)
    assert [("remind", DEFAULT_START + 2 * DAY), ("expire", DEFAULT_START + 7 * DAY)] == [
        (entry.name, entry.due_at) for entry in entries
    ]
    assert ["remind"] == [entry.name for entry in soon]


def test_cancelled_timeout_never_fires_and_is_logged(offers: SagaHarness) -> None:
    """After cancelling the expiry the offer outlives day 7; the action names who did it."""
    with offers.transaction() as session:
        cancel_timeout(session, OFFER, "O-1", "expire", actor="alice")
    offers.advance(10 * DAY)
    assert "offered" == offers.state(OfferSaga, "O-1")
    assert 2 == len(offers.published(CustomerReminded))  # the other timeout still works
    assert [] == _outbox_types(offers)
    operator_lines = [
        row["trigger"] for row in offers.journal(OfferSaga, "O-1") if row["outcome"] == "operator"
    ]
    assert ["timeout expire cancelled by alice"] == operator_lines
    with offers.transaction() as session:
        (action,) = recent_actions(session)
    assert ("alice", "timeout.cancel", "offers.Offer O-1 expire") == (
        action.actor,
        action.action,
        action.subject,
    )


def test_cancelling_a_timeout_already_shipped_makes_it_stale(offers: SagaHarness) -> None:
    """A cancelled expiry that already left the outbox arrives, and is journaled stale."""
    offers.clock.move_to(DEFAULT_START + 7 * DAY)
    offers.ship()  # the reminder and the expiry are with the broker, nobody handled them yet
    with offers.transaction() as session:
        cancel_timeout(session, OFFER, "O-1", "expire", actor="bob")
    offers.run_until_quiet()
    assert "offered" == offers.state(OfferSaga, "O-1")
    outcomes = [(row["trigger"], row["outcome"]) for row in offers.journal(OfferSaga, "O-1")]
    assert ("offers.OfferExpired", "stale") in outcomes


def test_rescheduled_earlier_fires_at_the_new_time(offers: SagaHarness) -> None:
    """The expiry moved to day 1 expires the offer on day 1, before any reminder."""
    with offers.transaction() as session:
        entry = reschedule_timeout(
            session, OFFER, "O-1", "expire", DEFAULT_START + DAY, actor="carol"
        )
    assert DEFAULT_START + DAY == entry.due_at
    offers.advance(DAY)
    assert "expired" == offers.state(OfferSaga, "O-1")
    assert [] == offers.published(CustomerReminded)
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    assert DEFAULT_START + DAY == saga.finished_at


def test_rescheduled_later_waits_for_the_new_time(offers: SagaHarness) -> None:
    """The expiry moved to day 10 has not fired on day 9, and has on day 10."""
    with offers.transaction() as session:
        reschedule_timeout(session, OFFER, "O-1", "expire", DEFAULT_START + 10 * DAY, actor="d")
    offers.advance(9 * DAY)
    assert "offered" == offers.state(OfferSaga, "O-1")
    offers.advance(DAY)
    assert "expired" == offers.state(OfferSaga, "O-1")


def test_fire_now_makes_the_saga_handle_it_at_once(offers: SagaHarness) -> None:
    """Firing the expiry now expires the offer without moving the clock."""
    with offers.transaction() as session:
        fire_timeout(session, OFFER, "O-1", "expire", actor="erin")
    offers.run_until_quiet()
    assert "expired" == offers.state(OfferSaga, "O-1")
    assert DEFAULT_START == offers.now


def test_reschedule_of_a_shipped_timeout_is_refused_and_changes_nothing(
    offers: SagaHarness,
) -> None:
    """A timeout already on its way cannot be moved: the error says so and the saga is as it was."""
    offers.clock.move_to(DEFAULT_START + 7 * DAY)
    offers.ship()
    before = offers.saga(OfferSaga, "O-1")
    with pytest.raises(TimeoutAlreadySent, match="cancel it instead"), offers.transaction() as s:
        reschedule_timeout(s, OFFER, "O-1", "expire", DEFAULT_START + 9 * DAY, actor="f")
    after = offers.saga(OfferSaga, "O-1")
    assert before is not None
    assert after is not None
    assert (before.version, before.timeouts) == (after.version, after.timeouts)


def test_an_action_bumps_the_version_so_a_stale_worker_copy_cannot_save(
    offers: SagaHarness,
) -> None:
    """A worker that loaded the saga before the action fails its version-checked save."""
    before = offers.saga(OfferSaga, "O-1")
    assert before is not None
    with offers.transaction() as session:
        cancel_timeout(session, OFFER, "O-1", "remind", actor="g")
    after = offers.saga(OfferSaga, "O-1")
    assert after is not None
    assert before.version + 1 == after.version
    assert ["expire"] == list(after.timeouts)
    from sagas import store

    with offers.transaction() as session:
        assert not store.save(session, before, expected_version=before.version)


def test_unknown_timeout_names_the_pending_ones(offers: SagaHarness) -> None:
    """A typo gets an error listing what the saga waits for."""
    with (
        pytest.raises(TimeoutNotPending, match="pending: expire, remind"),
        offers.transaction() as session,
    ):
        cancel_timeout(session, OFFER, "O-1", "expiry", actor="h")


def test_cli_lists_reschedules_and_cancels(
    offers: SagaHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagabox timeouts` does what the Python calls do, with --actor in the log."""
    db = offers.database
    assert 0 == main(["timeouts", "list", "--db", db, "--due-within", "3d"])
    out = capsys.readouterr().out
    assert "remind" in out
    assert "expire" not in out
    assert 0 == main(
        ["timeouts", "reschedule", OFFER, "O-1", "expire", "--in", "1d", "--db", db, "--actor", "i"]
    )
    assert "rescheduled" in capsys.readouterr().out
    assert 0 == main(["timeouts", "cancel", OFFER, "O-1", "remind", "--db", db, "--actor", "i"])
    assert 1 == main(["timeouts", "fire", OFFER, "O-1", "remind", "--db", db])
    assert "not waiting for a timeout named 'remind'" in capsys.readouterr().err
    offers.advance(DAY)
    assert "expired" == offers.state(OfferSaga, "O-1")
    with offers.transaction() as session:
        actions = [(a.actor, a.action) for a in recent_actions(session)]
        remaining = session.execute(select(outbox_messages.c.type)).all()
    assert [("i", "timeout.cancel"), ("i", "timeout.reschedule")] == actions
    assert [] == remaining


@pytest.mark.parametrize(
    "when", ["--at=9999-12-31T23:59:59+00:00", "--at=0001-01-01T00:00:00+14:00", "--in=36501d"]
)
def test_cli_refuses_a_time_over_a_century_away_in_one_line(
    offers: SagaHarness, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    """A repeating timeout moved to the calendar's ends would overflow on its next time: the
    move is refused in one line, and the timeout keeps its time."""
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    before = saga.timeouts["remind"].due_at
    db = offers.database
    assert 1 == main(["timeouts", "reschedule", OFFER, "O-1", "remind", when, "--db", db])
    (line,) = capsys.readouterr().err.splitlines()
    assert "more than 100 years from now" in line
    saga = offers.saga(OfferSaga, "O-1")
    assert saga is not None
    assert before == saga.timeouts["remind"].due_at
    with offers.transaction() as session:
        assert [] == recent_actions(session)


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--due-within", "99999999999d"],
        ["list", "--limit", "-1"],
        ["list", "--limit", "99999999999999999999"],
        ["reschedule", OFFER, "O-1", "remind", "--in", "99999999999d"],
    ],
)
def test_cli_bad_numbers_are_usage_errors(
    offers: SagaHarness, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A duration past the calendar or a limit below 1 or past 64 bits: exit 2 with a usage
    line naming the argument, no traceback, nothing changed."""
    with pytest.raises(SystemExit) as exited:
        main(["timeouts", *args, "--db", offers.database])
    assert 2 == exited.value.code
    last = capsys.readouterr().err.splitlines()[-1]
    assert "error: argument --" in last
    with offers.transaction() as session:
        assert 2 == len(list_timeouts(session))
        assert [] == recent_actions(session)
