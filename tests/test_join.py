"""Composite events: `join(...)` waits for every part in any order, keeps the first of each,
shrugs off duplicates, and gives up at its durable deadline unless it completed first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection
from pydantic import BaseModel
from sqlalchemy.orm import Session

from outbox import Event
from outbox.messages import Message
from sagabox import App
from sagabox.testing import SagaHarness
from sagas import JoinTimedOut, Saga, SagaContext, SagaDefinitionError, branch, join, on
from tests import join_app
from tests.join_app import Application, Applied, CreditScored, IdentityVerified
from tests.relay_helpers import wait_for

HOUR = timedelta(hours=1)


@pytest.fixture
def harness(empty_database_url: str) -> Iterator[SagaHarness]:
    """The application service alone: the test delivers the check results itself."""
    with SagaHarness(*join_app.apps(with_checks=False), database=empty_database_url) as h:
        yield h


def _apply(h: SagaHarness, case_id: str, name: str = "Ada", score: int = 700) -> None:
    h.dispatch(Applied(case_id=case_id, name=name, score=score))


def _outcomes(h: SagaHarness, case_id: str) -> list[tuple[str, str]]:
    return [(line["trigger"], line["outcome"]) for line in h.journal(Application, case_id)]


@pytest.mark.parametrize("credit_first", [True, False], ids=["credit-first", "identity-first"])
def test_the_join_completes_in_either_order(harness: SagaHarness, credit_first: bool) -> None:
    _apply(harness, "C-1")
    credit = CreditScored(case_id="C-1", good=True)
    identity = IdentityVerified(case_id="C-1", genuine=True)
    first, second = (credit, identity) if credit_first else (identity, credit)
    harness.dispatch(first)
    assert "checking" == harness.state(Application, "C-1")
    harness.dispatch(second)
    assert "approved" == harness.state(Application, "C-1")
    saga = harness.saga(Application, "C-1")
    assert saga is not None
    assert f"decided on {type(second).__name__}" == saga.data.outcome
    assert credit.good == (saga.part(CreditScored) or credit).good
    assert {} == saga.timeouts  # the deadline went with the state


def test_guards_choose_between_the_ways_out(harness: SagaHarness) -> None:
    for case_id, good, genuine in [("C-2", True, False), ("C-3", False, True)]:
        _apply(harness, case_id)
        harness.dispatch(
            CreditScored(case_id=case_id, good=good),
            IdentityVerified(case_id=case_id, genuine=genuine),
        )
    assert "denied" == harness.state(Application, "C-2")
    assert "review" == harness.state(Application, "C-3")


def test_duplicates_change_nothing(harness: SagaHarness) -> None:
    """A second result of one kind (a re-sent check) keeps the first; one after the join
    completed is journaled as ignored; a redelivery of the same message is dropped."""
    _apply(harness, "C-4")
    harness.dispatch(CreditScored(case_id="C-4", good=False), copies=2)
    harness.dispatch(CreditScored(case_id="C-4", good=True))
    harness.dispatch(IdentityVerified(case_id="C-4", genuine=True))
    assert "review" == harness.state(Application, "C-4")  # the first credit result counted
    harness.dispatch(IdentityVerified(case_id="C-4", genuine=False))
    assert "review" == harness.state(Application, "C-4")
    assert [
        (Applied.type_name, "transition"),
        (CreditScored.type_name, "transition"),
        (CreditScored.type_name, "transition"),
        (IdentityVerified.type_name, "transition"),
        (IdentityVerified.type_name, "late"),
    ] == _outcomes(harness, "C-4")


def test_the_deadline_fires_when_a_part_never_comes(harness: SagaHarness) -> None:
    _apply(harness, "C-5")
    harness.dispatch(CreditScored(case_id="C-5", good=True))
    harness.advance(23 * HOUR)
    assert "checking" == harness.state(Application, "C-5")
    harness.advance(HOUR)
    assert "timed_out" == harness.state(Application, "C-5")
    saga = harness.saga(Application, "C-5")
    assert saga is not None
    assert "no answer in a day" == saga.data.outcome
    assert (JoinTimedOut.type_name, "transition") == _outcomes(harness, "C-5")[-1]


def test_a_completed_join_cancels_its_deadline(harness: SagaHarness) -> None:
    """Completing the join deletes the deadline's outbox row: nothing arrives a day later,
    not even a stale timeout."""
    _apply(harness, "C-6")
    harness.dispatch(
        IdentityVerified(case_id="C-6", genuine=True), CreditScored(case_id="C-6", good=True)
    )
    harness.advance(3 * 24 * HOUR)
    assert "approved" == harness.state(Application, "C-6")
    assert JoinTimedOut.type_name not in {trigger for trigger, _ in _outcomes(harness, "C-6")}
    assert [] == harness.sent(JoinTimedOut)


class StartedByAPart(Saga[BaseModel], name="jointest.StartedByAPart"):
    """Waits in its initial state: the first part creates it, nothing enters it."""

    states = ["waiting", {"name": "both", "final": True}, {"name": "expired", "final": True}]
    transitions = [
        join(
            CreditScored,
            IdentityVerified,
            source="waiting",
            into="both",
            within=timedelta(days=1),
            on_timeout="expired",
        )
    ]
    correlation = {CreditScored: "case_id", IdentityVerified: "case_id"}


def test_a_join_in_the_initial_state_arms_its_deadline_when_a_part_starts_it(
    empty_database_url: str,
) -> None:
    """No transition enters the initial state, so the part that creates the saga schedules
    the deadline; the next part does not move it, and it fires a day after the first."""
    app = App("started", sagas=[StartedByAPart], inputs=[CreditScored, IdentityVerified])
    with SagaHarness(app, database=empty_database_url) as h:
        h.dispatch(CreditScored(case_id="P-1", good=True))
        saga = h.saga(StartedByAPart, "P-1")
        assert saga is not None
        assert ["join/waiting"] == list(saga.timeouts)
        h.dispatch(CreditScored(case_id="P-1", good=False))  # a duplicate: no new deadline
        h.advance(HOUR)
        h.dispatch(IdentityVerified(case_id="P-2", genuine=True))
        h.dispatch(CreditScored(case_id="P-2", good=True))
        h.advance(23 * HOUR)
        assert ("expired", "both") == (
            h.state(StartedByAPart, "P-1"),
            h.state(StartedByAPart, "P-2"),
        )
        triggers = [line["trigger"] for line in h.journal(StartedByAPart, "P-2")]
        assert JoinTimedOut.type_name not in triggers


class Quote(Event, type="jointest.Quote"):
    case_id: str
    price: int


class Stock(Event, type="jointest.Stock"):
    case_id: str


class Prices(BaseModel):
    read: list[int] = []


class TwoJoinsOnOneType(Saga[Prices], name="jointest.TwoJoinsOnOneType"):
    """Joins a quote twice: with the stock, then again with the credit check."""

    states = ["new", "first", "second", {"name": "done", "final": True}]
    transitions = [
        on(Applied, "new", "first"),
        join(Quote, Stock, source="first", into=branch("second", after="read_quote")),
        join(Quote, CreditScored, source="second", into=branch("done", after="read_quote")),
    ]
    correlation = {Applied: "case_id", Quote: "case_id", Stock: "case_id"}
    correlation |= {CreditScored: "case_id"}

    def read_quote(self, ctx: SagaContext, _part: object) -> None:
        quote = self.part(Quote)
        self.data.read.append(-1 if quote is None else quote.price)


def test_of_two_joins_on_one_type_a_part_is_read_from_the_join_the_saga_is_in(
    empty_database_url: str,
) -> None:
    """The second join's action read the first join's quote (kept in the data as well)."""
    app = App("quotes", sagas=[TwoJoinsOnOneType], inputs=[Applied, Quote, Stock, CreditScored])
    with SagaHarness(app, database=empty_database_url) as h:
        h.dispatch(Applied(case_id="Q-1", name="Ada", score=700))
        h.dispatch(Quote(case_id="Q-1", price=1), Stock(case_id="Q-1"))
        h.dispatch(Quote(case_id="Q-1", price=2), CreditScored(case_id="Q-1", good=True))
        saga = h.saga(TwoJoinsOnOneType, "Q-1")
        assert saga is not None
        assert ("done", [1, 2]) == (saga.state_name, saga.data.read)


class Submitted(Event, type="jointest.Submitted"):
    case_id: str


class DraftFirst(Saga[BaseModel], name="jointest.DraftFirst"):
    """Waits for the checks only once the draft is submitted; a check may come before."""

    states = ["new", "draft", "checking", {"name": "done", "final": True}]
    states += [{"name": "expired", "final": True}]
    transitions = [
        on(Applied, "new", "draft"),
        on(Submitted, "draft", "checking"),
        join(
            CreditScored,
            IdentityVerified,
            source="checking",
            into="done",
            within=timedelta(days=1),
            on_timeout="expired",
        ),
    ]
    correlation = {Applied: "case_id", Submitted: "case_id", CreditScored: "case_id"}
    correlation |= {IdentityVerified: "case_id"}


def test_a_part_before_the_saga_waits_for_it_is_retried_not_dropped(
    empty_database_url: str,
) -> None:
    """It was journaled `ignored` in `draft`, so the join never completed and expired; like
    any early message it now fails, is retried, and counts once the saga is checking."""
    app = App("drafts", sagas=[DraftFirst], inputs=[Applied, Submitted, CreditScored])
    with SagaHarness(app, database=empty_database_url) as h:
        h.dispatch(Applied(case_id="D-1", name="Ada", score=700))
        h.dispatch(CreditScored(case_id="D-1", good=True))  # early
        h.dispatch(Submitted(case_id="D-1"), IdentityVerified(case_id="D-1", genuine=True))
        h.advance(HOUR)  # past the early part's retry delay
        assert "done" == h.state(DraftFirst, "D-1")
        outcomes = [(line["trigger"], line["outcome"]) for line in h.journal(DraftFirst, "D-1")]
        assert (CreditScored.type_name, "transition") == outcomes[-1]
        assert [] == h.dead_letters()


def test_the_join_with_real_services(empty_database_url: str) -> None:
    """Both checks answered by their service; one that never answers runs into the deadline."""
    with SagaHarness(*join_app.apps(), database=empty_database_url) as h:
        _apply(h, "C-7", name="Mallory")
        _apply(h, "C-8", name="Ghost")
        _apply(h, "C-9", name="Ada", score=800)
        h.advance(2 * 24 * HOUR)
        assert ["denied", "timed_out", "approved"] == [
            h.state(Application, case_id) for case_id in ("C-7", "C-8", "C-9")
        ]


@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
def test_the_join_through_a_real_relay_and_worker(database_url: str, broker_url: str) -> None:
    """End to end on the backend's database and RabbitMQ: the two results race back through
    the broker and the join decides once both are in."""
    exchange = f"test-{uuid.uuid4().hex[:8]}"
    apps = join_app.apps(database=database_url, broker=broker_url, exchange=exchange)
    workers = [app.worker() for app in apps]
    relay = apps[0].relay()
    try:
        with Connection(broker_url) as connection:
            for worker in workers:
                worker.drain()  # declares the queue
                worker.queue()(connection.channel()).purge()
        with Session(apps[0].engine) as session, session.begin():
            for case_id, name in [("R-1", "Ada"), ("R-2", "Mallory")]:
                apps[0].start(session, Application, Applied(case_id=case_id, name=name, score=700))

        def states() -> list[str | None]:
            with Session(apps[0].engine) as session:
                found = [apps[0].runtime.load(session, Application, c) for c in ("R-1", "R-2")]
            return [None if saga is None else saga.state_name for saga in found]

        def decided() -> bool:
            relay.drain()
            for worker in workers:
                worker.drain()
            return ["approved", "denied"] == states()

        wait_for(decided, timeout=60, what="both joins to complete")
    finally:
        relay.close()
        with Connection(broker_url) as connection:
            for worker in workers:
                worker.queue()(connection.channel()).delete()
        for app in apps:
            app.engine.dispose()


def test_the_diagram_shows_one_arrow_per_way_out_with_its_guards() -> None:
    lines = Application.mermaid().splitlines()
    parts = "jointest.CreditScored + jointest.IdentityVerified"
    assert f"    checking --> denied: {parts} [not genuine]" in lines
    assert f"    checking --> review: {parts} [not good]" in lines
    assert f"    checking --> approved: {parts} [else]" in lines
    assert f"    checking --> timed_out: no {parts} within 1 day" in lines
    assert not [line for line in lines if "checking --> checking" in line]


class Empty(BaseModel):
    pass


def test_a_deadline_needs_a_way_out_and_the_reverse() -> None:
    with pytest.raises(SagaDefinitionError, match="go together"):
        join(CreditScored, IdentityVerified, source="checking", into="done", within=HOUR)
    with pytest.raises(SagaDefinitionError, match="two or more distinct"):
        join(CreditScored, CreditScored, source="checking", into="done")


def test_a_join_must_lead_out_of_its_state() -> None:
    with pytest.raises(SagaDefinitionError, match="must lead out"):

        class Loop(Saga[Empty], name="jointest.Loop"):
            states = ["new", "checking"]
            transitions = [
                on(Applied, "new", "checking"),
                join(CreditScored, IdentityVerified, source="checking", into="checking"),
            ]


def test_a_data_field_named_like_the_bookkeeping_is_refused() -> None:
    class Clash(BaseModel):
        sagabox: int = 0

    with pytest.raises(SagaDefinitionError, match="rename that field"):

        class Clashing(Saga[Clash], name="jointest.Clashing"):
            states = ["new", "checking", {"name": "done", "final": True}]
            transitions = [
                on(Applied, "new", "checking"),
                join(CreditScored, IdentityVerified, source="checking", into="done"),
            ]


# --- any order, any duplication: a property of the pure decision --------------------------

_parts = st.lists(
    st.one_of(
        st.builds(lambda good: CreditScored(case_id="P", good=good), st.booleans()),
        st.builds(lambda genuine: IdentityVerified(case_id="P", genuine=genuine), st.booleans()),
    ),
    max_size=8,
)


def _deliver(saga: Application, message: Message) -> None:
    if saga.allows(message):
        saga.fire(SagaContext(saga, message), message)
        saga.version += 1
    else:
        assert saga.ignores(message), f"{message.type_name} refused in {saga.state_name}"


@settings(max_examples=200, deadline=None)
@given(_parts)
def test_any_order_and_duplication_of_parts_decides_on_the_first_of_each(
    parts: list[CreditScored | IdentityVerified],
) -> None:
    """Whatever arrives, in whatever order and however often: the join completes exactly when
    both kinds have arrived, on the message that brought the second kind, and decides on the
    first result of each kind; later ones are ignored."""
    now = datetime(2026, 1, 5, tzinfo=UTC)
    saga = Application(
        correlation_id="P",
        state="checking",
        data=Application.data_type(),  # type: ignore[arg-type]
        version=1,
        created_at=now,
        updated_at=now,
    )
    for part in parts:
        _deliver(saga, part)
    credit = next((p for p in parts if isinstance(p, CreditScored)), None)
    identity = next((p for p in parts if isinstance(p, IdentityVerified)), None)
    kept_credit, kept_identity = saga.part(CreditScored), saga.part(IdentityVerified)
    assert (credit and credit.good) == (kept_credit and kept_credit.good)
    assert (identity and identity.genuine) == (kept_identity and kept_identity.genuine)
    if credit is None or identity is None:
        assert "checking" == saga.state_name
        return
    expected = "denied" if not identity.genuine else "review" if not credit.good else "approved"
    assert expected == saga.state_name
    completing = max(parts.index(credit), parts.index(identity))
    assert f"decided on {type(parts[completing]).__name__}" == saga.data.outcome


def test_join_keeps_parts_apart_from_the_envelope() -> None:
    """The kept part is the message's own fields: its id and times are in the journal."""
    saga = Application(
        correlation_id="E",
        state="checking",
        data=Application.data_type(),  # type: ignore[arg-type]
        version=1,
        created_at=datetime(2026, 1, 5, tzinfo=UTC),
        updated_at=datetime(2026, 1, 5, tzinfo=UTC),
    )
    _deliver(saga, CreditScored(case_id="E", good=True))
    dumped = saga.data.model_dump(mode="json")
    assert {
        "parts": {"join/checking": {CreditScored.type_name: {"case_id": "E", "good": True}}}
    } == (dumped["sagabox"])


def test_an_async_action_in_a_join_branch_is_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="is `async def`"):

        class Awaiting(Saga[Empty], name="jointest.Awaiting"):
            states = ["new", "checking", {"name": "done", "final": True}]
            transitions = [
                on(Applied, "new", "checking"),
                join(
                    CreditScored,
                    IdentityVerified,
                    source="checking",
                    into=branch("done", after="decide"),
                ),
            ]

            async def decide(self, ctx: SagaContext, _part: object) -> None:
                pass


def test_the_join_deadline_cannot_be_a_part() -> None:
    """`JoinTimedOut` is the join's own deadline, delivered by `within=`: listing it as a part
    would wait for a timeout nobody schedules."""
    with pytest.raises(SagaDefinitionError, match=r"within=.*on_timeout="):
        join(CreditScored, JoinTimedOut, source="checking", into="done")


@pytest.mark.parametrize(
    ("source", "first"),
    [("checking", "on"), ("checking", "join"), ("*", "on"), (["new", "checking"], "join")],
)
def test_on_and_join_on_one_type_in_one_state_are_refused(source: object, first: str) -> None:
    """Both would take `CreditScored` in "checking", and only the one declared first would
    ever run; whichever comes first, the class is refused with what to do."""
    plain = on(CreditScored, source, "done", after="decide")
    joined = join(CreditScored, IdentityVerified, source="checking", into="done")
    with pytest.raises(SagaDefinitionError, match=r"CreditScored.*branch\("):

        class Twice(Saga[Empty], name="jointest.Twice"):
            states = ["new", "checking", {"name": "done", "final": True}]
            transitions = [
                on(Applied, "new", "checking"),
                *([plain, joined] if first == "on" else [joined, plain]),
            ]

            def decide(self, ctx: SagaContext, _message: object) -> None:
                pass


def test_on_in_another_state_than_the_join_on_one_type_is_kept() -> None:
    """A part handled by `on(...)` in a state the join does not wait in is no conflict."""

    class Later(Saga[Empty], name="jointest.Later"):
        states = ["new", "checking", "review", {"name": "done", "final": True}]
        transitions = [
            on(Applied, "new", "checking"),
            join(CreditScored, IdentityVerified, source="checking", into="review"),
            on(CreditScored, "review", "done"),
        ]

    assert {"checking", "review"} == set(Later.machine.events[CreditScored.type_name].transitions)
