"""The generated stateful test (`sagabox.testing_stateful`) over the real runtime, on SQLite and
PostgreSQL: the subscription saga of issue 15's sequences, and the order example."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from examples.order.messages import (
    InventoryReserved,
    OrderPlaced,
    OutOfStock,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
)
from examples.order.saga import OrderSaga
from outbox import Message
from sagabox.testing_stateful import saga_machine
from tests.subscription_app import (
    Cancelled,
    Charged,
    Completed,
    Extend,
    Rekey,
    Started,
    SubscriptionSaga,
)


def _settings(backend: str) -> settings:
    # PostgreSQL round trips cost more: fewer examples there, the same rules.
    examples = 30 if backend == "sqlite" else 8
    return settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def subscription_messages(key: str) -> st.SearchStrategy[Message]:
    return st.one_of(
        *(st.builds(kind, sub_id=st.just(key)) for kind in (Started, Charged, Completed, Extend)),
        st.builds(Cancelled, sub_id=st.just(key)),
        st.builds(Rekey, sub_id=st.just(key), new_id=st.just(key + "-other")),
    )


def order_messages(key: str) -> st.SearchStrategy[Message]:
    placed = st.builds(
        OrderPlaced,
        order_id=st.just(key),
        customer=st.just("c"),
        sku=st.just("sku"),
        quantity=st.integers(1, 3),
        amount=st.just(Decimal("9.50")),
    )
    answers = (PaymentCharged, PaymentDeclined, InventoryReserved, OutOfStock, PaymentRefunded)
    return st.one_of(placed, *(st.builds(kind, order_id=st.just(key)) for kind in answers))


def test_subscription_saga_keeps_every_guarantee(database_url: str, backend: str) -> None:
    """Any sequence of the subscription's messages, timeouts, prunes, renewals and races."""
    machine = saga_machine(SubscriptionSaga, messages=subscription_messages, database=database_url)
    run_state_machine_as_test(machine, settings=_settings(backend))


def test_order_example_keeps_every_guarantee(database_url: str, backend: str) -> None:
    """The order example through the same generated test."""
    machine = saga_machine(OrderSaga, messages=order_messages, database=database_url)
    run_state_machine_as_test(machine, settings=_settings(backend))
