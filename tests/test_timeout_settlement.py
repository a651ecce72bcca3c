"""The pure timeout bookkeeping (`sagas.timeouts.settle`) on generated cases, without a database:
nothing pending leaks, nothing replaced is written, every id stays unique."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from outbox import clock
from sagas.timeouts import PendingTimeout, Scheduled, Timeout, settle


class Due(Timeout, type="settlement.Due"):
    pass


NAMES = st.sampled_from(["a", "b", "c"])
STATES = st.sampled_from(["s1", "s2", "s3"])
T0 = datetime(2026, 1, 5, tzinfo=clock.UTC)


def _pending(state: str, outlive: bool) -> PendingTimeout:
    return PendingTimeout(uuid.uuid4(), state, T0, outlive_state=outlive)


# Built once: a pydantic model per generated call would cost more than the settlement itself.
MESSAGES = [Due(message_id=uuid.uuid4(), saga="s", timeout=name) for name in "abc" * 8]


def _scheduled(index: int, state: str | None, outlive: bool, days: int) -> Scheduled:
    message = MESSAGES[index]
    return Scheduled(message.timeout, message, T0 + timedelta(days=days), outlive, None, 1, state)


pending_sets = st.dictionaries(NAMES, st.builds(_pending, STATES, st.booleans()))
scheduled = st.builds(
    _scheduled, st.integers(0, len(MESSAGES) - 1), st.none() | STATES, st.booleans(),
    st.integers(1, 9),
)  # fmt: skip
# Each message at most once per transition, as `ctx.schedule` gives each call an id of its own.
calls = st.lists(
    st.one_of(NAMES, scheduled),
    max_size=6,
    unique_by=lambda call: call if isinstance(call, str) else call.message.message_id,
)


@settings(max_examples=300, deadline=None)
@given(pending_sets, calls, STATES, STATES, st.booleans())
def test_settlement_never_leaks_or_writes_a_replaced_timeout(
    before_pending: dict[str, PendingTimeout],
    timer_calls: list[Scheduled | str],
    before: str,
    after: str,
    finished: bool,
) -> None:
    """Every timeout pending before is kept or dropped; rows written are exactly the pending
    entries new in this transition, one per name, each with its own id."""
    # A reachable start: what is pending belongs to the current state, or outlives states.
    before_pending = {
        name: entry if entry.outlive_state else replace(entry, state=before)
        for name, entry in before_pending.items()
    }
    result = settle(before_pending, timer_calls, before=before, after=after, finished=finished)
    old_ids = {p.message_id for p in before_pending.values()}
    new_ids = {p.message_id for p in result.timeouts.values()}
    written = {call.message.message_id for call in result.written}
    assert old_ids == (old_ids & new_ids) | set(result.dropped)
    assert not (set(result.dropped) & new_ids)
    assert written == new_ids - old_ids
    assert len(result.written) == len(written) == len({c.name for c in result.written})
    if finished:
        assert ({}, []) == (result.timeouts, result.written)
    for name, entry in result.timeouts.items():
        assert entry.state == after or entry.outlive_state, name
    last = {c.name: c for c in timer_calls if isinstance(c, Scheduled)}
    for call in result.written:
        assert last[call.name] is call  # only the last schedule of a name can be written
