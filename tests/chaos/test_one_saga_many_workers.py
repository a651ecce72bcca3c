"""100 messages for one saga, delivered at once to four competing workers: none is lost."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy.orm import Session

from outbox import Outbox
from outbox.database import make_engine
from sagabox import App
from tests.relay_helpers import dead_letter_rows, wait_for
from tests.saga_fixtures import Counter, CounterOpened, Ping

pytestmark = [
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
    pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True),
]


def test_a_hundred_pings_for_one_saga_through_four_workers(
    database_url: str, broker_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    app = App(
        f"counter-{suffix}",
        sagas=[Counter],
        database=database_url,
        broker=broker_url,
        exchange=f"test-{suffix}",
    )
    app.__dict__["engine"] = make_engine(database_url, pool_size=10, pool_pre_ping=True)
    workers = [app.worker(prefetch=10) for _ in range(4)]
    workers[0].drain()  # declares the queue
    with Session(app.engine) as session, session.begin():
        app.runtime.handle(session, CounterOpened(key="k"))
        outbox = Outbox(session)
        for _ in range(100):
            outbox.add(Ping(key="k"))
    relay = app.relay(poll_interval=0.1)
    assert 100 == relay.drain()  # all on the queue before any worker starts
    threads = [threading.Thread(target=worker.run) for worker in workers]
    threads.append(threading.Thread(target=relay.run))  # ships delayed retries, if any
    for thread in threads:
        thread.start()

    def pings() -> int:
        with Session(app.engine) as session:
            counter = app.runtime.load(session, Counter, "k")
            return counter.data.pings if counter is not None else 0

    try:
        wait_for(lambda: pings() == 100, timeout=120, what="100 pings counted", every=0.05)
    finally:
        for worker in workers:
            worker.stop()
        relay.stop()
        for thread in threads:
            thread.join(timeout=30)
    assert 100 == pings()
    assert 100 == sum(worker.stats.handled for worker in workers)
    assert all(worker.stats.handled > 0 for worker in workers), [w.stats for w in workers]
    assert [] == dead_letter_rows(app.engine)
    print(f"conflicts retried at once: {sum(w.stats.retried_at_once for w in workers)}")
    relay.close()
    app.engine.dispose()
