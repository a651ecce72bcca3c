"""Bench section (m) keeps working (the numbers mean nothing here): the driver's window, the
figures read back from the business rows, and a few three-step sagas through real processes."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from bench import workflows
from bench.apps import ADVANCE_ROW
from bench.closed_loop import keep_in_flight
from sagabox.testing import scratch_database


def test_the_driver_keeps_at_most_the_window_in_flight_and_starts_each_once() -> None:
    """Starts run ahead of the finished count by the window at most, and every id once."""
    started: list[int] = []
    ahead: list[int] = []
    done = [0]

    def start(n: int) -> None:
        started.append(n)
        ahead.append(len(started) - done[0])

    def finished() -> int:
        done[0] = min(done[0] + 1, len(started))  # one more finishes at every look
        return done[0]

    keep_in_flight(start, finished, first=10, count=25, in_flight=4, every=0.0)
    assert list(range(10, 35)) == started
    assert 4 == max(ahead)


def _chain(engine: Engine, key: str, steps: int, started: float) -> None:
    with engine.begin() as connection:
        for step in range(steps):
            last = step == 2
            connection.execute(ADVANCE_ROW, {"id": key, "last": last, "started": started})


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_figures_come_from_the_rows_and_a_missing_step_is_an_error(engine: Engine) -> None:
    """Rate and latency come from each row's stamps; a row with fewer than 3 steps fails."""
    workflows.seed(engine, 3)
    clock_now = text("SELECT extract(epoch FROM clock_timestamp())")
    with engine.connect() as connection:
        now = float(connection.execute(clock_now).scalar_one())
    for n in range(3):
        _chain(engine, f"c-{n}", 3, now - 1.0 + n * 0.1)
    run = workflows.read_back(engine, 3)
    assert 3 == run.workflows
    assert 900 < run.p50_ms < 60_000  # about 0.9 s, plus the machine's delay
    assert run.p50_ms <= run.p99_ms
    assert 0 < run.per_second
    assert 3 * run.per_second == run.steps_per_second
    with engine.begin() as connection:
        connection.execute(text("UPDATE bench_chain SET steps = 2 WHERE id = 'c-1'"))
    with pytest.raises(RuntimeError, match="expected 3 each"):
        workflows.read_back(engine, 3)


def test_sagabox_runs_three_step_sagas_through_its_relay_and_workers(
    postgres_url: str, amqp_url: str
) -> None:
    """Each saga's three steps ran once, through real worker and relay processes."""
    with scratch_database(postgres_url) as url:
        run = workflows.sagabox_run(url, amqp_url, 4, in_flight=2, batch_size=1)
    assert 4 == run.workflows
    assert 0 < run.p50_ms <= run.p99_ms
