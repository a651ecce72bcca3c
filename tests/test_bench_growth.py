"""A tiny run of bench section (k), so `python -m bench.growth` keeps working (the numbers mean
nothing here): every dimension's fill clones real rows, and the sizes are measured in rounds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, func, make_url, select, text

from bench import growth
from outbox import clock
from outbox.claim import claim_due
from outbox.tables import outbox_messages
from sagas import SagaRuntime
from sagas.tables import saga_instances, saga_journal

TINY = growth.sizes(1000)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_every_fill_adds_its_rows_with_the_shapes_the_runtime_writes(engine: Engine) -> None:
    """Each dimension's filler rows, cloned from the runtime's own, are there in full, and the
    relay can claim the backlog's (its headers and payload read as a real row's)."""
    runtime = SagaRuntime([growth.GrowthSaga], endpoint=growth.ENDPOINT)
    growth.seed(engine, runtime, TINY[0].rows)
    for size in (TINY[1], TINY[3], TINY[5], TINY[7]):  # one size of each dimension
        growth.fill(engine, size, growth.filler_rows(size, TINY[0]))
    with engine.connect() as connection:
        counts = {
            table.name: connection.scalar(select(func.count()).select_from(table))
            for table in (saga_instances, saga_journal, outbox_messages)
        }
    sagas = growth.stepped(TINY[0].rows)
    assert {
        "sagabox_saga_instances": 100,
        "sagabox_saga_journal": sagas + 1000,
        "sagabox_outbox_messages": sagas + 100 + 1000,
    } == counts
    with engine.begin() as connection:
        rows = claim_due(connection, now=clock.now(), limit=5)
    assert 5 == len(rows)
    assert all(row.headers["sagabox-type"] == "bench.growth.Shipped" for row in rows)
    assert all({"key": row.partition_key} == json.loads(row.payload) for row in rows)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_claim_inside_the_backlogs_span_ships_a_full_batch(
    engine: Engine, frozen_clock: FrozenDateTimeFactory
) -> None:
    """Right after the fill (the clock stopped), the rows a claim writes are due among the
    backlog's first ones; the claim still ships a whole batch each time (with the backlog's
    keys, its rows waited for their keys' older backlog rows: 100 of 200 in the first)."""
    runtime = SagaRuntime([growth.GrowthSaga], endpoint=growth.ENDPOINT)
    growth.seed(engine, runtime, TINY[0].rows)
    backlog = growth.Size("due outbox backlog", 20_000, "sagabox_outbox_messages", TINY[7].fill)
    growth.fill(engine, backlog, backlog.rows)
    for _ in range(3):
        growth.claim(engine)  # it checks that it claimed a whole batch


def test_a_tiny_growth_run_measures_every_size_in_rounds(
    postgres_url: str, postgres_admin: Engine, postgres_template: str
) -> None:
    @contextmanager
    def scratch() -> Iterator[str]:
        # A clone of the migrated template: quicker than migrating a database each time.
        name = f"t_growth_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
        try:
            yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with postgres_admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    # The smallest size and the relay's backlog: a step and a claim on each.
    measured = growth.measure(
        postgres_url, scale=1000, rounds=2, steps=2, claims=1, only=[0, 7], scratch=scratch
    )
    assert [TINY[0], TINY[7]] == [size for size, _ in measured]
    assert all(len(t.steps) == 4 and len(t.claims) == 2 for _, t in measured)
    # A header, a separator, a step per size, and a claim per size (both grow the outbox).
    assert 2 + 2 + 2 == len(growth.table(measured))
    assert 2 == len(growth.rows_for_results(measured))
    assert "due outbox backlog: 1,000" in growth.summary(measured)
