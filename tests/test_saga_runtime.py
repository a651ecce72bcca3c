"""The saga runtime in the caller's transaction: creation, transitions, journal, outbox, errors."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    Numeric,
    String,
    Table,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from outbox import clock
from outbox.tables import outbox_messages
from sagas import (
    InvalidTransition,
    MissingCorrelation,
    SagaAlreadyStarted,
    SagaNotFound,
    SagaRuntime,
    UnknownSagaType,
)
from sagas.journal import journal_of
from sagas.store import prune_finished
from sagas.tables import saga_instances, saga_journal
from tests.saga_fixtures import (
    ChecksJoin,
    Counter,
    CreditChecked,
    CriminalChecked,
    DocApproved,
    DocReview,
    DocSubmitted,
    LoanRequested,
    LoanSaga,
    OfferAccepted,
    Phase,
    Ping,
)

# The service's own business table, next to sagabox's.
business = MetaData()
loans = Table(
    "loans",
    business,
    Column("id", String(20), primary_key=True),
    Column("amount", Numeric(12, 2), nullable=False),
)

runtime = SagaRuntime([LoanSaga, Counter, DocReview])


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def _handle(engine: Engine, message: Any, on: SagaRuntime = runtime) -> list[Any]:
    with Session(engine) as session, session.begin():
        return on.handle(session, message)


def _request(loan_id: str = "L-1", amount: str = "2500") -> LoanRequested:
    return LoanRequested(loan_id=loan_id, amount=Decimal(amount))


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_business_row_saga_and_outbox_commit_or_roll_back_together(
    engine: Engine, outcome: str
) -> None:
    """A web request stores its loan row and starts the saga in one transaction: all of it,
    saga row and outbox row included, commits together or not at all."""
    business.create_all(engine)
    with Session(engine) as session:
        session.execute(insert(loans).values(id="L-1", amount=Decimal("2500")))
        saga = runtime.start(session, LoanSaga, _request())
        assert ("checking", 1) == (saga.state_name, saga.version)
        getattr(session, outcome)()

    expected = 1 if outcome == "commit" else 0
    counts = [_count(engine, t) for t in (loans, saga_instances, saga_journal, outbox_messages)]
    assert [expected] * 4 == counts


def test_actions_emit_with_correlation_and_causation(engine: Engine) -> None:
    """Sent and published messages carry the saga's correlation id and the incoming message as
    their cause; commands go to the named endpoint, events under their type."""
    request = _request()
    _handle(engine, request)
    check = CreditChecked(loan_id="L-1", ok=True)
    _handle(engine, check)
    with engine.connect() as connection:
        rows = connection.execute(select(outbox_messages).order_by(outbox_messages.c.id)).all()
    assert [
        ("sagatest.RunCreditCheck", "credit", str(request.message_id)),
        ("sagatest.LoanOffered", "sagatest.LoanOffered", str(check.message_id)),
    ] == [(r.type, r.destination, r.headers["sagabox-causation-id"]) for r in rows]
    assert {"L-1"} == {r.headers["sagabox-correlation-id"] for r in rows}
    assert {"L-1"} == {r.partition_key for r in rows}


def test_guards_choose_the_branch_and_data_persists(engine: Engine) -> None:
    """`conditions`/`unless` pick the transition; the data model round-trips through JSON."""
    _handle(engine, _request("L-2", "99.95"))
    _handle(engine, CreditChecked(loan_id="L-2", ok=False))
    with Session(engine) as session:
        saga = runtime.load(session, LoanSaga, "L-2")
    assert saga is not None
    assert ("denied", Decimal("99.95"), False) == (
        saga.state_name,
        saga.data.amount,
        saga.data.credit_ok,
    )
    assert saga.is_finished


def test_journal_tells_where_a_saga_is_and_how_it_got_there(engine: Engine) -> None:
    """One journal row per message: from, to, trigger, message id, outcome, in order."""
    messages = [
        _request("L-3"),
        CreditChecked(loan_id="L-3", ok=True),
        CreditChecked(loan_id="L-3", ok=True),  # a duplicate check result: ignored
        OfferAccepted(loan_id="L-3"),
    ]
    for message in messages:
        _handle(engine, message)
    with engine.connect() as connection:
        journal = journal_of(connection, LoanSaga.id_for("L-3"))
    assert [
        ("new", "checking", "sagatest.LoanRequested", "transition", 1),
        ("checking", "offered", "sagatest.CreditChecked", "transition", 2),
        ("offered", "offered", "sagatest.CreditChecked", "ignored", None),
        ("offered", "accepted", "sagatest.OfferAccepted", "transition", 3),
    ] == [
        (j["from_state"], j["to_state"], j["trigger"], j["outcome"], j["version"]) for j in journal
    ]
    assert [m.message_id for m in messages] == [j["message_id"] for j in journal]


def test_rerun_of_a_transition_emits_the_same_message_ids(engine: Engine) -> None:
    """A handler re-run after a crash (first attempt rolled back) emits identical message ids,
    so downstream inboxes drop whatever the first attempt managed to send."""
    request = _request("L-4")

    def emitted_ids(commit: bool) -> list[Any]:
        with Session(engine) as session:
            runtime.handle(session, request)
            ids = list(session.scalars(select(outbox_messages.c.message_id)))
            session.commit() if commit else session.rollback()
        return ids

    first, second = emitted_ids(commit=False), emitted_ids(commit=True)
    assert 1 == len(first)
    assert first == second


def test_message_after_the_saga_finished_is_late_not_new(engine: Engine) -> None:
    """A finished saga stays as a tombstone: a late message, even a starting one, is journaled
    as late and creates nothing."""
    for message in (_request("L-5"), CreditChecked(loan_id="L-5", ok=False)):
        _handle(engine, message)
    outbox_before = _count(engine, outbox_messages)

    assert ["late"] == [h.outcome for h in _handle(engine, _request("L-5"))]
    assert ["late"] == [h.outcome for h in _handle(engine, OfferAccepted(loan_id="L-5"))]
    with engine.connect() as connection:
        rows = connection.execute(select(saga_instances.c.state, saga_instances.c.version)).all()
    assert [("denied", 2)] == [tuple(r) for r in rows]
    assert outbox_before == _count(engine, outbox_messages)


def test_either_message_may_start_a_join(engine: Engine) -> None:
    """Both results are needed in either order: whichever comes first creates the saga."""
    joins = SagaRuntime([ChecksJoin])
    for loan_id, first, second in [
        ("L-6", CriminalChecked(loan_id="L-6", clean=True), CreditChecked(loan_id="L-6", ok=True)),
        ("L-7", CreditChecked(loan_id="L-7", ok=True), CriminalChecked(loan_id="L-7", clean=True)),
    ]:
        _handle(engine, first, on=joins)
        _handle(engine, second, on=joins)
        with Session(engine) as session:
            join = joins.load(session, ChecksJoin, loan_id)
        assert join is not None
        assert ("both_done", True, True, True, 2) == (
            join.state_name,
            join.data.credit,
            join.data.criminal,
            join.data.concluded,  # set by the final state's on_enter callback
            join.version,
        )


def test_one_message_reaches_every_interested_saga(engine: Engine) -> None:
    """CreditChecked matters to the loan saga and the checks join: both handle it."""
    both = SagaRuntime([LoanSaga, ChecksJoin])
    _handle(engine, _request("L-7"), on=both)
    handled = _handle(engine, CreditChecked(loan_id="L-7", ok=True), on=both)
    assert {("sagatest.Loan", "offered"), ("sagatest.ChecksJoin", "credit_done")} == {
        (h.saga_type, h.to_state) for h in handled
    }


def test_enum_states_round_trip_by_member_name(engine: Engine) -> None:
    """Enum states are stored by member name and come back as the member."""
    _handle(engine, DocSubmitted(doc="D-1"))
    with engine.connect() as connection:
        assert "SUBMITTED" == connection.scalar(select(saga_instances.c.state))
    with Session(engine) as session:
        saga = runtime.load(session, DocReview, "D-1")
    assert saga is not None
    assert Phase.SUBMITTED is saga.state
    _handle(engine, DocApproved(doc="D-1"))
    with Session(engine) as session:
        done = runtime.load(session, "sagatest.DocReview", "D-1")
    assert done is not None
    assert Phase.DONE is done.state


# --- bad input: named errors that say saga type, id and state ---


def test_invalid_transition_names_type_id_and_state(engine: Engine) -> None:
    """A message not allowed in the current state raises InvalidTransition and changes nothing."""
    _handle(engine, _request("L-8"))
    with pytest.raises(InvalidTransition) as error:
        _handle(engine, OfferAccepted(loan_id="L-8"))
    text = str(error.value)
    for part in ("sagatest.Loan", "'L-8'", str(LoanSaga.id_for("L-8")), "'checking'"):
        assert part in text
    assert 1 == _count(engine, saga_journal)


def test_missing_correlation_value_is_a_named_error(engine: Engine) -> None:
    """A message whose correlation field is empty cannot find its saga: MissingCorrelation."""
    with pytest.raises(MissingCorrelation, match=r"sagatest\.Loan: sagatest\.LoanRequested"):
        _handle(engine, _request(loan_id=""))


def test_not_found_policies(engine: Engine) -> None:
    """A continuing message for no saga: raise (retry later), dead-letter, or ignore + journal."""
    with pytest.raises(SagaNotFound) as raised:
        _handle(engine, OfferAccepted(loan_id="nope"))
    assert "raise" == raised.value.policy
    assert "'nope'" in str(raised.value)
    with pytest.raises(SagaNotFound) as parked:
        _handle(engine, DocApproved(doc="nope"))
    assert "dead_letter" == parked.value.policy
    assert ["not_found"] == [h.outcome for h in _handle(engine, Ping(key="nope"))]
    assert 0 == _count(engine, saga_instances)
    assert 1 == _count(engine, saga_journal)


def test_start_refuses_an_existing_saga_and_a_non_starting_message(engine: Engine) -> None:
    """`start` creates or says why not."""
    with Session(engine) as session, session.begin():
        runtime.start(session, LoanSaga, _request("L-9"))
    with Session(engine) as session:
        with pytest.raises(SagaAlreadyStarted, match=r"'L-9'.*'checking'"):
            runtime.start(session, LoanSaga, _request("L-9"))
        with pytest.raises(InvalidTransition, match="does not start"):
            runtime.start(session, LoanSaga, OfferAccepted(loan_id="L-10"))


def test_start_refuses_a_saga_type_the_runtime_does_not_run(engine: Engine) -> None:
    """It used to start it: a saga row that no worker of this runtime routes messages to."""
    elsewhere = SagaRuntime()
    with Session(engine) as session, session.begin():
        with pytest.raises(UnknownSagaType, match=r"does not run LoanSaga \(its sagas: none\)"):
            elsewhere.start(session, LoanSaga, _request("L-11"))
        assert 0 == session.execute(select(func.count()).select_from(saga_instances)).scalar_one()
    # Registered, it starts.
    elsewhere.register(LoanSaga)
    with Session(engine) as session, session.begin():
        elsewhere.start(session, LoanSaga, _request("L-11"))
    assert 1 == _count(engine, saga_instances)


def test_unknown_saga_type_is_a_named_error() -> None:
    """Asking the runtime for a saga type it does not know lists the ones it does."""
    with pytest.raises(UnknownSagaType, match=r"'nope'.*sagatest\.Loan"):
        runtime.saga_type("nope")


def test_finished_sagas_are_pruned_after_their_retention(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Tombstones older than the retention go, with their journal; running sagas stay."""
    for loan_id in ("old-1", "old-2"):
        _handle(engine, _request(loan_id))
        _handle(engine, CreditChecked(loan_id=loan_id, ok=False))
    frozen_clock.tick(timedelta(days=31))
    _handle(engine, _request("running"))

    removed = []
    while True:
        with engine.begin() as connection:
            count = prune_finished(connection, older_than=clock.now() - timedelta(days=30))
        removed.append(count)
        if count == 0:
            break
    assert [2, 0] == removed
    with engine.connect() as connection:
        assert ["running"] == list(connection.scalars(select(saga_instances.c.correlation_id)))
        assert {"running"} == set(connection.scalars(select(saga_journal.c.correlation_id)))
