"""How the publisher cuts a batch into rounds: in order, at most one row of a partition key per
round, and a big row alone (pure logic, generated batches)."""

from __future__ import annotations

import uuid
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from outbox.claim import OutboxRow
from relay.publisher import ALONE_ABOVE, _segment

_rows = st.lists(
    st.tuples(st.sampled_from([None, "a", "b", "c"]), st.sampled_from([10, ALONE_ABOVE + 1])),
    max_size=30,
)


def _row(number: int, key: str | None, size: int) -> OutboxRow:
    return OutboxRow(number, uuid.uuid4(), "t", "t", key, "x" * size, {}, 0)


@given(_rows)
def test_rounds_keep_the_order_hold_one_row_per_key_and_a_big_row_alone(
    spec: list[tuple[str | None, int]],
) -> None:
    rows = [_row(n, key, size) for n, (key, size) in enumerate(spec)]
    queue = deque(rows)
    rounds = []
    while queue:
        rounds.append(_segment(queue))
    assert rows == [row for batch in rounds for row in batch]
    for batch in rounds:
        keys = [row.partition_key for row in batch if row.partition_key is not None]
        assert len(keys) == len(set(keys))
        if any(len(row.payload) > ALONE_ABOVE for row in batch):
            assert 1 == len(batch)
