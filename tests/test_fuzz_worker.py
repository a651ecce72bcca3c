"""Fuzzing the whole consume path through the real worker: generated bodies, headers and AMQP
properties, mixed with good messages, unbatched and batched, on the in-process broker and on
RabbitMQ (where properties can be raw non-UTF-8 bytes).

Invariant: the worker never raises, every generated message is handled at most once or
dead-lettered with a reason, every good message is handled exactly once, nothing is requeued
and the queue ends empty. `make fuzz` runs the long profile (SAGABOX_FUZZ_PROFILE=fuzz).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import amqp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer

from outbox.envelope import encode
from relay.broker import topic_exchange
from tests.bank_app import FAST_RETRIES, Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, dead_letter_rows

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
# CI-sized: a few seconds per test in the normal suite. `make fuzz`: the long run.
settings.register_profile("ci", max_examples=10, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("fuzz", max_examples=300, **_COMMON)  # type: ignore[arg-type]
PROFILE = settings.get_profile(os.environ.get("SAGABOX_FUZZ_PROFILE", "ci"))

GOOD = encode(Deposit(account="a", amount=1))

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n: GOOD.payload.encode()[:n], st.integers(0, len(GOOD.payload))),
    _json.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"account": _json, "amount": _json}).map(
        lambda value: json.dumps(value).encode()
    ),
    st.integers(1_000, 120_000).map(lambda n: b"[" * n + b"]" * n),  # RecursionError
    st.integers(4_400, 6_000).map(lambda n: b'{"account": "a", "amount": ' + b"9" * n + b"}"),
    st.integers(1_048_577, 1_100_000).map(lambda n: b'{"account": "' + b"x" * n + b'"}'),
)
header_values = st.one_of(
    st.text(max_size=20),
    _surrogates,
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.binary(max_size=10),
    st.lists(st.integers(-5, 5), max_size=3),
)
headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=20), header_values, max_size=5),
    st.fixed_dictionaries(
        {key: st.one_of(st.just(value), header_values) for key, value in GOOD.headers.items()}
    ),
    st.sampled_from([GOOD.type, "bank.Nonsense", "", "x" * 300, "bank.Dep\ud800sit"]).map(
        lambda kind: {**GOOD.headers, "sagabox-type": kind}
    ),
    st.sampled_from(["0", "1", "2", "-1", "x", "9" * 30]).map(
        lambda version: {**GOOD.headers, "sagabox-version": version}
    ),
)
text_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": st.one_of(
            st.sampled_from(["application/json", "application/x-python-serialize", "text/plain"]),
            st.text(max_size=30),
        ),
        "message_id": st.text(max_size=30),
        "correlation_id": st.text(max_size=30),
        "priority": st.integers(0, 255),
    },
)
# On the wire a short string can hold any bytes: only py-amqp itself sends them as they are.
raw_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_type": st.one_of(st.just("application/json"), st.binary(max_size=30)),
        "message_id": st.binary(max_size=30),
        "correlation_id": st.binary(max_size=30),
        "app_id": st.binary(max_size=30),
        "priority": st.integers(0, 255),
    },
)


@dataclass(frozen=True)
class Generated:
    """A message the fuzzer made up: anything at all."""

    body: bytes
    headers: dict[str, Any] | None
    properties: dict[str, Any]


@dataclass(frozen=True)
class Good:
    """A valid deposit, published among the generated ones; it must be handled once."""

    index: int


def _items(properties: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[Any]]:
    generated = st.builds(Generated, body=bodies, headers=headers, properties=properties)
    good = st.integers(0, 10**9).map(Good)
    return st.lists(st.one_of(generated, good), min_size=1, max_size=8)


@pytest.fixture(params=[1, 4], ids=["unbatched", "batched"])
def bank(request: pytest.FixtureRequest, database_url: str, broker_url: str) -> Iterator[Bank]:
    with bank_endpoint(
        database_url, broker_url, batch_size=request.param, retry=FAST_RETRIES
    ) as bank:
        yield bank


def _good_deposit(item: Good) -> Deposit:
    return Deposit(account=f"good-{item.index}", amount=1, message_id=uuid.uuid4())


def _publish_kombu(bank: Bank, items: list[Any]) -> list[Deposit]:
    goods: list[Deposit] = []
    with Connection(bank.app.broker_url) as connection:
        producer = Producer(connection.channel(), exchange=topic_exchange(bank.app.exchange))
        for item in items:
            if isinstance(item, Good):
                goods.append(_good_deposit(item))
                envelope = encode(goods[-1])
                body, headers, properties = (
                    envelope.payload.encode(),
                    envelope.headers,
                    {"content_type": "application/json"},
                )
            else:
                body, headers, properties = item.body, item.headers, dict(item.properties)
            content_type = properties.pop("content_type", None)
            producer.publish(
                body,
                routing_key=bank.app.name,
                headers=dict(headers or {}),
                content_type=content_type,
                content_encoding="binary" if content_type else None,
                delivery_mode=2,
                **properties,
            )
    return goods


def _publish_amqp(bank: Bank, items: list[Any]) -> list[Deposit]:
    goods: list[Deposit] = []
    url = Connection(bank.app.broker_url)
    connection = amqp.Connection(
        host=f"{url.hostname}:{url.port}",
        userid=url.userid,
        password=url.password,
        virtual_host=url.virtual_host,
    )
    connection.connect()
    try:
        channel = connection.channel()
        for item in items:
            if isinstance(item, Good):
                goods.append(_good_deposit(item))
                envelope = encode(goods[-1])
                message = amqp.Message(
                    envelope.payload.encode(),
                    content_type="application/json",
                    application_headers=envelope.headers,
                    delivery_mode=2,
                )
            else:
                message = amqp.Message(
                    item.body,
                    application_headers=dict(item.headers or {}),
                    delivery_mode=2,
                    **item.properties,
                )
            channel.basic_publish(message, exchange=bank.app.exchange, routing_key=bank.app.name)
    finally:
        connection.close()
    return goods


def _check_the_invariant(bank: Bank, items: list[Any], goods: list[Deposit]) -> None:
    stats = bank.worker.stats
    kinds = ("handled", "duplicates", "retried", "dead_lettered", "dropped", "requeued")
    before = {kind: getattr(stats, kind) for kind in kinds}
    letters_before = len(dead_letter_rows(bank.engine))

    assert len(items) == bank.worker.drain()  # the worker never raises

    delta = {kind: getattr(stats, kind) - before[kind] for kind in kinds}
    assert 0 == delta["requeued"]
    assert 0 == delta["retried"] == delta["dropped"]
    assert len(items) == delta["handled"] + delta["duplicates"] + delta["dead_lettered"]
    counts = ledger_counts(bank.engine)
    assert all(1 == counts.get(good.message_id) for good in goods)
    assert all(1 == count for count in counts.values())  # nothing handled twice
    letters = dead_letter_rows(bank.engine)[letters_before:]
    # A generated copy of a message id dead-lettered before is not kept twice.
    assert len(letters) <= delta["dead_lettered"]
    assert all(letter.reason for letter in letters)
    assert 0 == bank.worker.drain()  # nothing left behind, nothing redelivered


@pytest.mark.parametrize(
    ("backend", "broker_url"), [("sqlite", "memory"), ("postgresql", "rabbitmq")], indirect=True
)
@PROFILE
@given(items=_items(text_properties))
def test_the_worker_survives_generated_deliveries(bank: Bank, items: list[Any]) -> None:
    """Through kombu's publisher: bodies, headers and textual properties of any kind."""
    goods = _publish_kombu(bank, items)
    _check_the_invariant(bank, items, goods)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
@PROFILE
@given(items=_items(raw_properties))
def test_the_worker_survives_raw_amqp_properties(bank: Bank, items: list[Any]) -> None:
    """Through py-amqp with bytes properties: non-UTF-8 content types, message ids, app ids."""
    goods = _publish_amqp(bank, items)
    _check_the_invariant(bank, items, goods)
