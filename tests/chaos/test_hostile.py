"""Hostile input straight into the queue: whatever arrives, the worker does not crash, each bad
message is dead-lettered with a reason, and the valid message behind it is processed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox.envelope import encode
from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import Bank, bank_endpoint, dead_letter_rows

GOOD = encode(Deposit(account="a", amount=1))

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=300),  # random bytes
    st.builds(lambda n: GOOD.payload.encode()[:n], st.integers(0, len(GOOD.payload) - 1)),
    _json.map(lambda value: json.dumps(value).encode()),  # JSON of the wrong shape
    st.fixed_dictionaries(
        {"account": _json, "amount": _json}  # the right fields with the wrong types
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(1_048_577, 1_300_000).map(lambda n: b'{"account": "' + b"x" * n + b'"}'),
)
# (AMQP headers carry 64-bit integers at most: larger ones cannot even be sent.)
header_values = st.one_of(
    st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.none(), st.binary(max_size=10)
)
headers = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=20), header_values, max_size=6),  # junk headers
    st.fixed_dictionaries(  # sagabox's headers, some forged
        {key: st.one_of(st.just(value), header_values) for key, value in GOOD.headers.items()}
    ),
    st.sampled_from([GOOD.type, "bank.Nonsense", "", "x" * 300]).map(
        lambda kind: {**GOOD.headers, "sagabox-type": kind}
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-python-serialize",  # pickle
        "application/x-yaml",
        "text/plain",
        "application/octet-stream",
        None,
    ]
)


@pytest.fixture
def bank(database_url: str, broker_url: str) -> Iterator[Bank]:
    with bank_endpoint(database_url, broker_url) as bank:
        yield bank


@pytest.mark.parametrize(
    ("backend", "broker_url"), [("sqlite", "memory"), ("postgresql", "rabbitmq")], indirect=True
)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, headers=headers, content_type=content_types)
def test_no_input_crashes_the_worker_or_blocks_the_next_message(
    bank: Bank, body: bytes, headers: dict[str, Any] | None, content_type: str | None
) -> None:
    stats = bank.worker.stats
    kinds = ("handled", "duplicates", "retried", "dead_lettered")
    before = {kind: getattr(stats, kind) for kind in kinds}
    bank.publish_raw(body, headers=headers, content_type=content_type)
    follower = Deposit(account="b", amount=2)
    bank.send(follower)
    bank.relay.drain()
    assert 2 == bank.worker.drain()  # both taken off the queue; nothing raised
    assert 1 == ledger_counts(bank.engine).get(follower.message_id)
    outcomes = {kind: getattr(stats, kind) - before[kind] for kind in kinds}
    assert 2 == sum(outcomes.values())  # one outcome each, the follower's "handled" among them
    unreadable = (
        content_type != "application/json"
        or not isinstance(headers, dict)
        or len(body) > bank.worker.max_message_bytes
    )
    if unreadable:
        assert 1 == outcomes["dead_lettered"]
    if outcomes["dead_lettered"]:
        assert dead_letter_rows(bank.engine)[-1].reason  # always says why
