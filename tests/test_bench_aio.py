"""A tiny run of bench (j), so `python -m bench.aio` keeps working (the numbers mean nothing)."""

from __future__ import annotations

from bench import aio
from bench.common import scratch_database


def test_a_tiny_asyncio_benchmark_run_measures_both_sides(postgres_url: str) -> None:
    with scratch_database(postgres_url) as url:
        async_rate, sync_rate = aio.concurrent_requests(url, requests=20, rounds=1)
    with scratch_database(postgres_url) as url:
        seam, bare = aio.seam_latency(url, transactions=5, rounds=1)
        sync_seam, sync_bare = aio.sync_latency(url, transactions=5, rounds=1)
    assert min(async_rate, sync_rate, seam, bare, sync_seam, sync_bare) > 0
