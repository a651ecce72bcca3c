"""Fuzzing the reply and fault headers through the real worker: generated return-address headers
on replies, faults and requests, published to the endpoints' queues (memory:// and RabbitMQ).

Invariant: the worker never raises, each message is handled or dead-lettered with a reason, a
message claiming to be a reply moves a saga only if its headers name exactly that saga and its
pending request, and whatever the headers hold, the queues end empty. `make fuzz` runs the long
profile.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Producer
from sqlalchemy import select
from sqlalchemy.orm import Session

from outbox.envelope import encode
from outbox.return_address import (
    H_FAULT_TO,
    H_IN_REPLY_TO,
    H_ORIGIN_SAGA,
    H_ORIGIN_SAGA_ID,
    H_REPLY_TO,
    H_TO_SAGA,
    H_TO_SAGA_ID,
)
from outbox.tables import dead_letters
from relay.broker import topic_exchange
from sagabox import App
from tests.request_app import SILENT, CardCharged, ChargeCard, CheckoutSaga, CheckoutStarted, apps
from tests.test_fuzz_worker import PROFILE


@dataclass
class Shop:
    orders: App
    payment: App
    workers: list[Any]


@pytest.fixture
def shop(database_url: str, broker_url: str) -> Iterator[Shop]:
    suffix = uuid.uuid4().hex[:8]
    orders, payment = apps(database=database_url, broker=broker_url, exchange=f"fz-{suffix}")
    workers = [orders.worker(), payment.worker()]
    for worker in workers:
        worker.drain()
    try:
        yield Shop(orders, payment, workers)
    finally:
        with Connection(orders.broker_url) as connection:
            for worker in workers:
                worker.queue()(connection.channel()).delete()
        orders.engine.dispose()
        payment.engine.dispose()


_ids = st.sampled_from(["genuine", "other"]) | st.uuids().map(str)
_values = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.binary(max_size=8),
    st.just("x" * 300),
)
_return_headers = st.fixed_dictionaries(
    {},
    optional={
        H_TO_SAGA: st.sampled_from(["shop.Checkout", "shop.Plain", ""]) | _values,
        H_TO_SAGA_ID: _ids | _values,
        H_IN_REPLY_TO: st.sampled_from(["request"]) | _ids | _values,
        H_REPLY_TO: st.sampled_from(["orders", "payment", "no such", "a" * 300]) | _values,
        H_FAULT_TO: st.sampled_from(["orders", "x.y"]) | _values,
        H_ORIGIN_SAGA: st.sampled_from(["shop.Checkout"]) | _values,
        H_ORIGIN_SAGA_ID: _ids | _values,
    },
)


def _resolve(value: Any, genuine: uuid.UUID, request: uuid.UUID) -> Any:
    if value == "genuine":
        return str(genuine)
    if value == "other":
        return str(uuid.uuid4())
    if value == "request":
        return str(request)
    return value


@given(to_orders=_return_headers, to_payment=_return_headers)
@PROFILE
def test_generated_return_addresses_never_crash_the_worker_nor_misroute(
    shop: Shop, to_orders: dict[str, Any], to_payment: dict[str, Any]
) -> None:
    order_id = f"O-{uuid.uuid4().hex[:8]}"
    with Session(shop.orders.engine) as session, session.begin():
        saga = shop.orders.start(
            session, CheckoutSaga, CheckoutStarted(order_id=order_id, amount=SILENT)
        )
        [pending] = saga.timeouts
    request = uuid.UUID(pending.rsplit(":", 1)[1])
    genuine = CheckoutSaga.id_for(order_id)
    reply_headers = {k: _resolve(v, genuine, request) for k, v in to_orders.items()}
    charge_headers = {k: _resolve(v, genuine, request) for k, v in to_payment.items()}
    reply = encode(CardCharged(auth_code="fz", correlation_id=order_id))
    charge = encode(ChargeCard(amount=0, correlation_id=order_id))  # payment dead-letters it
    with Connection(shop.orders.broker_url) as connection:
        producer = Producer(connection.channel(), exchange=topic_exchange(shop.orders.exchange))
        for envelope, extra, to in (
            (reply, reply_headers, "orders"),
            (charge, charge_headers, "payment"),
        ):
            producer.publish(
                envelope.payload.encode(),
                routing_key=to,
                headers={**envelope.headers, **extra},
                content_type="application/json",
                content_encoding="binary",
                delivery_mode=2,
            )
    for _ in range(3):  # the charge's fault (if any) comes back as an outbox row: not relayed
        for worker in shop.workers:
            worker.drain()
    with Session(shop.orders.engine) as session:
        loaded = shop.orders.runtime.load(session, CheckoutSaga, order_id)
        reasons = session.execute(select(dead_letters.c.reason)).scalars().all()
    assert loaded is not None
    assert all(reasons)
    exact = {
        H_TO_SAGA: CheckoutSaga.saga_type,
        H_TO_SAGA_ID: str(genuine),
        H_IN_REPLY_TO: str(request),
    }
    if reply_headers == exact:
        assert ("paid", ["fz"]) == (loaded.state_name, loaded.data.auth_codes)
    elif exact.keys() & reply_headers.keys():
        # It claims to be a reply, and is not exactly this saga's: it must change nothing.
        assert ("charging", []) == (loaded.state_name, loaded.data.auth_codes)
    else:
        # Not a reply at all: an ordinary event, routed by its correlation id as any other.
        assert loaded.state_name in ("charging", "paid")
    for worker in shop.workers:
        assert 0 == worker.drain()  # nothing left behind, nothing requeued
