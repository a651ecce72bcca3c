"""A tiny run of every benchmark section (one case of (d)), so `make bench` keeps working (the
numbers mean nothing here)."""

from __future__ import annotations

import pytest

from bench.common import Results, Sizes
from bench.run import run


@pytest.mark.usefixtures("amqp_url")
def test_a_tiny_benchmark_run_produces_every_row(postgres_url: str, amqp_url: str) -> None:
    results = Results()
    run(postgres_url, amqp_url, Sizes.tiny(), results)
    names = [row[0] for row in results.rows]
    rows = 17 - 2 * (3 - Sizes.tiny().latency_cases)  # (d) has two rows a case
    assert rows == len(names)
    assert all(float(row[3]) > 0 for row in results.rows if row[3])  # the ratios
    table = results.markdown("machine")
    assert table.count("\n| (") == rows
