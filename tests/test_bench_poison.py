"""A tiny run of bench section (i), so it keeps working (the numbers mean nothing here)."""

from __future__ import annotations

import pytest

from bench.common import Results
from bench.run import poison
from sagabox.testing import scratch_database


@pytest.mark.usefixtures("amqp_url")
def test_the_poison_cost_section_runs(postgres_url: str, amqp_url: str) -> None:
    """Both rows come out with a ratio; the poison messages were dead-lettered, not retried."""
    results = Results()
    poison(postgres_url, amqp_url, 100, results, every=50)
    assert 2 == len(results.rows)
    assert all(float(row[3]) > 0 for row in results.rows)


def test_poison_is_dead_lettered_in_the_benchmark(postgres_url: str, amqp_url: str) -> None:
    """The benchmark measures what it says: one dead letter per `poison_every` good ones."""
    from bench.poison_cost import good_p99_ms

    with scratch_database(postgres_url) as url:
        _p99, dead = good_p99_ms(url, amqp_url, messages=200, poison_every=100, batch_size=10)
    assert 2 == dead
