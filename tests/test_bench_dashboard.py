"""The dashboard benchmark keeps working: a tiny fill, then one round of every page shape."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine, func, select

from bench import dashboard
from sagas.tables import saga_instances, saga_journal


@pytest.mark.parametrize("backend", ["postgresql"])
def test_tiny_fill_and_one_round_of_every_page(engine: Engine) -> None:
    """200 sagas and 2,000 journal lines; every page answers (the figures mean nothing)."""
    dashboard.fill(engine, 200, 2000, backlog=10, dead=20)
    with engine.connect() as connection:
        assert 200 == connection.execute(select(func.count()).select_from(saga_instances)).scalar()
        assert 2000 == connection.execute(select(func.count()).select_from(saga_journal)).scalar()
        states = dict(
            connection.execute(
                select(saga_instances.c.finished_at.is_(None), func.count()).group_by(
                    saga_instances.c.finished_at.is_(None)
                )
            ).all()
        )
    assert states[True] > 0  # live sagas
    assert states[False] > 0  # and finished ones
    timings = dashboard.measure(engine, 200, rounds=1)
    assert set(dashboard.shapes(200, random.Random(1)))  # noqa: S311 - picks pages, no secret == set(timings)
    assert all(1 == len(values) for values in timings.values())
