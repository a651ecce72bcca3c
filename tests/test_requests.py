"""Request/reply through the real relay and workers, on SQLite and PostgreSQL: replies routed home
by their headers, the request's timeout, late and duplicate replies, replies to finished or
pruned sagas, and forged or malformed reply headers dead-lettered with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from outbox import HandlerContext, Outbox, ReplyImpossible
from outbox.return_address import H_IN_REPLY_TO, H_TO_SAGA, H_TO_SAGA_ID
from sagabox.testing import SagaHarness
from sagas import prune_finished
from sagas.queries import saga_detail
from tests.request_app import (
    CHARGE_TIMEOUT,
    SILENT,
    TWICE,
    CardCharged,
    ChargeCard,
    CheckoutSaga,
    CheckoutStarted,
    OrderShipped,
    apps,
)


@pytest.fixture
def shop(database_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(*apps(), database=database_url) as harness:
        yield harness


def _outcomes(h: SagaHarness, order_id: str) -> list[tuple[str, str]]:
    return [(row["trigger"], row["outcome"]) for row in h.journal(CheckoutSaga, order_id)]


def _request(h: SagaHarness) -> ChargeCard:
    [shipped] = [s.message for s in h.shipped if isinstance(s.message, ChargeCard)]
    assert isinstance(shipped, ChargeCard)
    return shipped


def _late_reply(h: SagaHarness, request: ChargeCard, auth_code: str) -> None:
    """The payment endpoint answers `request` now, through the real `ctx.reply`."""
    with h.transaction() as session:
        HandlerContext(session, request, "payment/late").reply(CardCharged(auth_code=auth_code))
    h.run_until_quiet()


def test_the_reply_reaches_the_requesting_saga_by_its_headers_alone(shop: SagaHarness) -> None:
    """`CardCharged` has no order id and the saga maps no correlation for it: the headers the
    request carried bring the reply back to the instance, which moves on."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=40))
    assert "paid" == shop.state(CheckoutSaga, "O-1")
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert (["A40-0"], {}) == (saga.data.auth_codes, saga.timeouts)
    assert ("shop.CardCharged", "transition") == _outcomes(shop, "O-1")[-1]
    assert [] == shop.dead_letters()


def test_a_pending_request_is_kept_in_the_saga_row_and_shown(shop: SagaHarness) -> None:
    """What the saga awaits survives in its row (a pending timeout named after the request),
    which `sagabox sagas show` reads."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    request = _request(shop)
    expected = f"request:shop.ChargeCard:{request.message_id}"
    with shop.transaction() as session:
        detail = saga_detail(session, CheckoutSaga.saga_type, "O-1")
    assert detail is not None
    assert ("charging", [expected]) == (detail.summary.state, list(detail.timeouts))


def test_without_a_reply_the_timeout_arrives_as_a_message(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    shop.advance(CHARGE_TIMEOUT - timedelta(seconds=1))
    assert "charging" == shop.state(CheckoutSaga, "O-1")
    shop.advance(timedelta(seconds=1))
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("unanswered", str(_request(shop).message_id)) == (
        saga.state_name,
        saga.data.timed_out_request,
    )


def test_a_reply_after_the_timeout_is_journaled_late_and_never_applied(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    shop.advance(CHARGE_TIMEOUT)
    _late_reply(shop, _request(shop), "too-late")
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("unanswered", []) == (saga.state_name, saga.data.auth_codes)
    assert ("shop.CardCharged", "late") == _outcomes(shop, "O-1")[-1]
    assert [] == shop.dead_letters()


def test_a_reply_before_the_timeout_cancels_it(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    _late_reply(shop, _request(shop), "in-time")
    shop.advance(2 * CHARGE_TIMEOUT)
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("paid", ["in-time"]) == (saga.state_name, saga.data.auth_codes)
    triggers = [trigger for trigger, _ in _outcomes(shop, "O-1")]
    assert "sagabox.RequestTimedOut.shop.ChargeCard" not in triggers


def test_a_second_reply_to_the_same_request_is_late(shop: SagaHarness) -> None:
    """The handler answers twice: the first answer is applied, the second journaled late."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=TWICE))
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("paid", ["A7-0"]) == (saga.state_name, saga.data.auth_codes)
    assert [("shop.CardCharged", "transition"), ("shop.CardCharged", "late")] == _outcomes(
        shop, "O-1"
    )[-2:]


def test_a_redelivered_reply_is_applied_once(shop: SagaHarness) -> None:
    """The same reply message twice (a relay crash, say): the inbox keeps it to one effect."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    request = _request(shop)
    with shop.transaction() as session:
        reply = HandlerContext(session, request, "payment/x").reply(CardCharged(auth_code="r"))
    with shop.transaction() as session:  # the same row once more, as a redelivery would be
        _copy_reply(session, reply, request)
    shop.run_until_quiet()
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ["r"] == saga.data.auth_codes
    assert 1 == sum(trigger == "shop.CardCharged" for trigger, _ in _outcomes(shop, "O-1"))


def test_replies_to_a_finished_or_pruned_saga_are_harmless(shop: SagaHarness) -> None:
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    request = _request(shop)
    shop.advance(CHARGE_TIMEOUT)
    shop.dispatch(OrderShipped(order_id="O-1"))
    _late_reply(shop, request, "after-the-end")
    assert ("shop.CardCharged", "late") == _outcomes(shop, "O-1")[-1]
    with shop.transaction() as session:
        assert 1 == prune_finished(session, older_than=shop.now + timedelta(days=1))
    _late_reply(shop, request, "after-pruning")
    assert shop.saga(CheckoutSaga, "O-1") is None
    assert [] == shop.dead_letters()


def test_reply_outside_a_request_says_what_to_do_instead(shop: SagaHarness) -> None:
    with shop.transaction() as session:
        context = HandlerContext(session, ChargeCard(amount=1), "payment/x")
        with pytest.raises(ReplyImpossible, match="was not sent as a request"):
            context.reply(CardCharged(auth_code="x"))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({H_TO_SAGA_ID: "forge"}, "forged or mangled"),
        ({H_TO_SAGA_ID: "not-a-uuid"}, "refused unread: header sagabox-to-saga-id is not a UUID"),
        ({H_IN_REPLY_TO: None}, "refused unread: a reply or fault needs all of"),
        ({H_TO_SAGA: "shop.Nobody"}, "which this endpoint does not run"),
    ],
)
def test_forged_or_malformed_reply_headers_are_dead_lettered_with_the_reason(
    shop: SagaHarness, headers: dict[str, str | None], reason: str
) -> None:
    """A reply naming another instance than its correlation's, a mangled id, a missing header,
    an unknown saga type: each is dead-lettered, with the reason, and changes nothing."""
    shop.dispatch(CheckoutStarted(order_id="O-1", amount=SILENT))
    request = _request(shop)
    genuine = CheckoutSaga.id_for("O-1")
    forged = {
        H_TO_SAGA: CheckoutSaga.saga_type,
        H_TO_SAGA_ID: str(genuine),
        H_IN_REPLY_TO: str(request.message_id),
    }
    for name, value in headers.items():
        if value is None:
            forged.pop(name)
        else:
            forged[name] = str(CheckoutSaga.id_for("O-2")) if value == "forge" else value
    with shop.transaction() as session:
        Outbox(session).add(
            CardCharged(auth_code="forged", correlation_id="O-1"),
            destination="orders",
            headers=forged,
        )
    shop.run_until_quiet()
    [letter] = shop.dead_letters()
    assert reason in letter.reason
    saga = shop.saga(CheckoutSaga, "O-1")
    assert saga is not None
    assert ("charging", []) == (saga.state_name, saga.data.auth_codes)


def _copy_reply(session: Session, reply: object, request: ChargeCard) -> None:
    from outbox.return_address import ReturnAddress, wire_headers

    headers = wire_headers(request)
    address = ReturnAddress("orders", headers["sagabox-origin-saga"], CheckoutSaga.id_for("O-1"))
    assert isinstance(reply, CardCharged)
    Outbox(session).add(
        reply, destination=address.endpoint, headers=address.headers_for_answer(request.message_id)
    )


def test_graph_draws_request_reply_and_fault_edges() -> None:
    from sagabox import graph

    flow = graph.build(apps())
    chart = graph.mermaid(flow)
    assert "ep_orders -->|shop.ChargeCard| ep_payment" in chart
    assert "ep_payment -->|shop.CardCharged| ep_orders" in chart
    assert "ep_payment -.->|sagabox.Faulted.shop.ChargeCard| ep_orders" in chart
    # Replies, faults and request timeouts all have a sender: only the unwatched charge,
    # which no saga of these apps sends, is reported.
    problems = [p.detail for p in graph.check(flow) if not p.smell]
    assert 3 == len(problems)
    assert all(
        "shop.CheckoutStarted" in p or "OrderShipped" in p or "WithoutWatching" in p
        for p in problems
    )
