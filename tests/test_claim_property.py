"""Property: the relay's claim (`outbox.claim.claim_due`) never reorders a partition key and
always moves on, whatever the keys (NULL, empty, 255 characters of non-ASCII, SQL-looking,
differing only in case or a trailing space) and however due, retried and scheduled rows of a
key interleave; on PostgreSQL also with a second relay claiming while the first holds its rows.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, insert, select

from outbox.claim import OutboxRow, claim_due, delete_rows, postpone_rows
from outbox.tables import outbox_messages

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
KEYS = (
    None,
    "",
    "k",
    "K",
    "k ",
    "ü" * 255,
    "'); DELETE FROM sagabox_outbox_messages; --",
    "%_\\",
    "κλειδί-🔑",
)


@dataclass(frozen=True)
class Spec:
    key: str | None
    #: Seconds from NOW the row is due at (negative: due already).
    due_in: int
    #: How many times the relay failed to ship it (a retry when not due yet).
    attempts: int


rows_strategy = st.lists(
    st.builds(
        Spec,
        key=st.sampled_from(KEYS),
        due_in=st.sampled_from([-600, -60, -1, 0, 30, 3600]),
        attempts=st.sampled_from([0, 0, 0, 1, 3]),
    ),
    min_size=1,
    max_size=25,
)


def _fill(engine: Engine, specs: list[Spec]) -> list[int]:
    with engine.begin() as connection:
        connection.execute(delete(outbox_messages))
        ids = []
        for n, spec in enumerate(specs):
            ids.append(
                connection.execute(
                    insert(outbox_messages).returning(outbox_messages.c.id),
                    {
                        "message_id": uuid.uuid4(),
                        "type": "claimprop.Row",
                        "destination": "claimprop",
                        "partition_key": spec.key,
                        "payload": f'{{"n": {n}}}',
                        "headers": {"sagabox-type": "claimprop.Row"},
                        "available_at": NOW + timedelta(seconds=spec.due_in),
                        "attempts": spec.attempts,
                        "created_at": NOW - timedelta(hours=1),
                    },
                ).scalar_one()
            )
    return ids


def _table(engine: Engine, now: datetime = NOW) -> dict[int, Spec]:
    """The outbox as it stands, each row's due time in seconds from `now`."""
    t = outbox_messages
    with engine.connect() as connection:
        rows = connection.execute(select(t.c.id, t.c.partition_key, t.c.available_at, t.c.attempts))
        return {
            row.id: Spec(
                row.partition_key,
                int((row.available_at.replace(tzinfo=UTC) - now).total_seconds()),
                row.attempts,
            )
            for row in rows
        }


def _eligible(table: dict[int, Spec]) -> list[int]:
    """Due rows no older row of their key waits behind a retry for, in id order."""
    due = []
    for row_id, spec in sorted(table.items()):
        behind = spec.key is not None and any(
            other.key == spec.key and other.attempts > 0 and other.due_in > 0
            for other_id, other in table.items()
            if other_id < row_id
        )
        if spec.due_in <= 0 and not behind:
            due.append(row_id)
    return due


def _check_in_order(table: dict[int, Spec], claimed: list[int], *, held: set[int]) -> None:
    """Every due row of a claimed row's key older than it is claimed too (none held by
    another relay, none left for later), and the claim is in id order."""
    assert claimed == sorted(claimed)
    assert set(claimed) <= set(_eligible(table))
    assert not held & set(claimed)
    mine = set(claimed)
    for row_id in claimed:
        key = table[row_id].key
        if key is None:
            continue
        older = {
            other_id
            for other_id, other in table.items()
            if other.key == key and other_id < row_id and other.due_in <= 0
        }
        assert older <= mine, (row_id, key, sorted(older - mine))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows_strategy, st.sampled_from([1, 2, 3, 10, 10_000]))
def test_a_claim_keeps_each_key_in_order_and_moves_on(
    engine: Engine, specs: list[Spec], limit: int
) -> None:
    _fill(engine, specs)
    shipped: dict[str | None, list[int]] = {}
    for _round in range(len(specs) + 1):
        table = _table(engine)
        with engine.begin() as connection:
            claimed = [row.id for row in claim_due(connection, now=NOW, limit=limit)]
            _check_in_order(table, claimed, held=set())
            assert len(claimed) <= limit
            # Progress: something due that nothing holds back is claimed.
            assert bool(claimed) == bool(_eligible(table))
            connection.execute(delete(outbox_messages).where(outbox_messages.c.id.in_(claimed)))
        for row_id in claimed:
            shipped.setdefault(table[row_id].key, []).append(row_id)
        if not claimed:
            break
    assert not _eligible(_table(engine))
    # Rows without a key promise no order (the soonest due go first).
    assert all(ids == sorted(ids) for key, ids in shipped.items() if key is not None)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows_strategy, st.sampled_from([1, 2, 5, 10_000]), st.sampled_from([1, 3, 10_000]))
def test_two_relays_claiming_at_once_never_take_a_row_twice_or_pass_each_other(
    engine: Engine, specs: list[Spec], first_limit: int, second_limit: int
) -> None:
    _fill(engine, specs)
    table = _table(engine)
    with engine.connect() as first, engine.connect() as second, first.begin():
        taken = [row.id for row in claim_due(first, now=NOW, limit=first_limit)]
        _check_in_order(table, taken, held=set())
        with second.begin():
            also: list[OutboxRow] = claim_due(second, now=NOW, limit=second_limit)
            _check_in_order(table, [row.id for row in also], held=set(taken))
            if not taken and _eligible(table):
                assert also


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows_strategy,
    st.lists(
        st.tuples(st.sampled_from([1, 2, 4, 10_000]), st.sampled_from([1, 3, 10_000])),
        min_size=1,
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_two_relays_shipping_with_failures_round_after_round_keep_every_key_in_order(
    engine: Engine,
    specs: list[Spec],
    rounds: list[tuple[int, int]],
    rng: random.Random,
) -> None:
    """Rounds of two relays claiming at once, each shipping its rows in id order as the relay
    does: a row the broker refuses is postponed (its attempt counted) and the rest of its key
    in that batch stays; between rounds time moves on, so retries come due. Every row shipped
    had no older row of its key left that was due or waiting for a retry."""
    _fill(engine, specs)
    now = NOW
    for first_limit, second_limit in rounds:
        table = _table(engine, now)
        with engine.connect() as first, engine.connect() as second, first.begin():
            taken = [row.id for row in claim_due(first, now=now, limit=first_limit)]
            _check_in_order(table, taken, held=set())
            with second.begin():
                also = [row.id for row in claim_due(second, now=now, limit=second_limit)]
                _check_in_order(table, also, held=set(taken))
                _ship(second, table, also, now, rng)
            _ship(first, table, taken, now, rng)
        now += timedelta(seconds=rng.choice([0, 31, 3601]))


def _ship(
    connection: Connection,
    table: dict[int, Spec],
    claimed: list[int],
    now: datetime,
    rng: random.Random,
) -> None:
    """Publish `claimed` in id order with a refusal now and then, as `Relay.publish_batch`
    settles them: shipped rows deleted, a refused one postponed, the rest of its key kept."""
    failed_keys: set[str | None] = set()
    shipped, refused = [], []
    for row_id in claimed:
        key = table[row_id].key
        if key is not None and key in failed_keys:
            continue  # held behind its key's refused row
        if rng.random() < 0.3:
            refused.append(row_id)
            if key is not None:
                failed_keys.add(key)
        else:
            shipped.append(row_id)
    delete_rows(connection, shipped)
    postpone_rows(connection, refused, until=now + timedelta(seconds=30))
