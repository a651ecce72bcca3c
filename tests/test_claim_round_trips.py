"""The relay's claim sends no statement it does not need: an idle relay claims after every
batch and before it sleeps, so each round trip there is latency on commit -> broker."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event

from outbox import Outbox, clock
from outbox.claim import claim_due
from tests.subscription_app import Started


def _statements(engine: Engine, limit: int) -> tuple[int, int]:
    """(statements sent, rows claimed) by one claim in its own transaction."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as connection:
            rows = claim_due(connection, now=clock.now(), limit=limit)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent), len(rows)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_empty_outbox_costs_the_claim_one_statement(engine: Engine) -> None:
    """Nothing due: one SELECT, not a second one in id order that cannot find more."""
    assert (1, 0) == _statements(engine, 500)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_due_row_is_still_claimed(engine: Engine) -> None:
    """The claim still finds what is due, with the partition check a keyed row needs."""
    with engine.begin() as connection:
        Outbox(connection).add(Started(sub_id="due"), destination="subs", partition_key="k")
    assert (2, 1) == _statements(engine, 500)
