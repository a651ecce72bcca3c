"""FastAPI and Litestar services behind a real uvicorn server, called over real HTTP: a request
commits its business row, saga and outbox row together (or, failing, none of them), the real
relay ships, real workers advance the saga, and an HTTP endpoint reads its new state. On SQLite
+ aiosqlite with the in-process broker, and on PostgreSQL + psycopg async with RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from kombu import Connection
from sqlalchemy import Engine, select

from outbox.tables import outbox_messages
from relay import Relay, Worker
from sagabox import App
from sagas.tables import saga_instances
from tests import aio_fastapi_app, aio_litestar_app
from tests.aio_helpers import running, serving
from tests.aio_service import business, credit_checks, loans, make_apps
from tests.relay_helpers import wait_for
from tests.saga_fixtures import LoanSaga

# With PostgreSQL these tests ask for RabbitMQ as they run, which the collection cannot see: they
# go in the lane of the RabbitMQ tests (tests/conftest.py) all the same.
pytestmark = pytest.mark.second_lane

FRAMEWORKS: dict[str, Callable[[App], Any]] = {
    "fastapi": aio_fastapi_app.make_api,
    "litestar": aio_litestar_app.make_api,
}


def _ids(engine: Engine, column: Any, **where: str) -> list[Any]:
    query = select(column).order_by(column)
    for name, value in where.items():
        query = query.where(column.table.c[name] == value)
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())


@pytest.fixture
def broker(backend: str, request: pytest.FixtureRequest) -> str:
    """The in-process broker with SQLite, RabbitMQ with PostgreSQL."""
    if backend == "postgresql":
        request.node.add_marker(pytest.mark.rabbitmq)  # counted per backend like the others
        return str(request.getfixturevalue("amqp_url"))
    return str(request.getfixturevalue("memory_broker"))


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_a_request_starts_a_saga_that_the_relay_and_workers_advance(
    framework: str, database_url: str, broker: str
) -> None:
    """POST /loans commits the loan, its saga and the credit check together; a request failing
    after the start leaves none of them; relay and workers take the saga to `approved`, and
    GET /loans/{id} reads it."""
    service, credit = make_apps(database_url, broker)
    engine = service.engine
    business.create_all(engine)
    workers: list[Worker] = [service.worker(), credit.worker()]
    for worker in workers:
        worker.drain()  # declares the queues before anything is published
    relay: Relay = service.relay(poll_interval=0.2)
    try:
        with (
            serving(FRAMEWORKS[framework](service)) as base_url,
            running(relay, *workers),
            httpx.Client(base_url=base_url, timeout=30) as http,
        ):
            failed = http.post("/loans", json={"loan_id": "L-2", "amount": "100", "fail": True})
            assert 500 == failed.status_code
            assert ([], [], []) == (
                _ids(engine, loans.c.id),
                _ids(engine, saga_instances.c.correlation_id),
                _ids(engine, outbox_messages.c.message_id, partition_key="L-2"),
            )
            assert 404 == http.get("/loans/L-2").status_code

            created = http.post("/loans", json={"loan_id": "L-1", "amount": "2500"})
            assert 201 == created.status_code
            assert {"loan_id": "L-1", "state": "checking"} == created.json()
            # Committed before the answer was sent: the rows are there as soon as it is.
            assert ["L-1"] == _ids(engine, loans.c.id)
            assert ["L-1"] == _ids(engine, saga_instances.c.correlation_id)

            def approved() -> bool:
                return bool("approved" == http.get("/loans/L-1").json()["state"])

            wait_for(approved, timeout=30, what="the workers to approve loan L-1")
            assert {"loan_id": "L-1", "state": "approved", "version": 2} == http.get(
                "/loans/L-1"
            ).json()
        # Whatever is left is shipped and handled now: the failed request sent nothing.
        relay.drain()
        for worker in workers:
            worker.drain()
        assert ["L-1"] == _ids(engine, credit_checks.c.loan_id)
        assert [] == _ids(engine, outbox_messages.c.message_id)
    finally:
        relay.close()
        if broker != "memory://":
            with Connection(broker) as connection:
                for worker in workers:
                    worker.queue()(connection.channel()).delete()
        for app in (service, credit):
            app.engine.dispose()


# --- two sagabox Apps in one web app: refused, not one silently standing in for the other -------


def test_a_second_fastapi_lifespan_is_refused_rather_than_replacing_the_first(
    tmp_path: Path,
) -> None:
    """Chaining `lifespan(loans, then=lifespan(offers))` used to hand every `Sagas` dependency
    the offers App, which then started loan sagas as its own; now the server refuses to start."""
    from fastapi import FastAPI

    from sagabox.fastapi import lifespan

    url = f"sqlite:///{tmp_path / 'two.db'}"
    loans_app = App("loans", sagas=[LoanSaga], database=url)
    offers_app = App("offers", sagas=[LoanSaga], database=url)
    api = FastAPI(lifespan=lifespan(loans_app, then=lifespan(offers_app)))

    async def start_up() -> None:
        async with api.router.lifespan_context(api):
            pass

    with pytest.raises(RuntimeError, match=r"already serves the sagabox App 'loans'"):
        anyio.run(start_up)


def test_two_litestar_plugins_need_their_own_dependency_names() -> None:
    """Two `SagaboxPlugin`s with the default names used to leave the last one's App behind
    every handler's `sagas`; now the second is refused, and distinct names work."""
    from litestar import Litestar

    from sagabox.litestar import SagaboxPlugin

    first, second = App("loans", sagas=[LoanSaga]), App("offers", sagas=[LoanSaga])
    with pytest.raises(ValueError, match=r"'transaction' is registered already.*transaction_key"):
        Litestar([], plugins=[SagaboxPlugin(first), SagaboxPlugin(second)], logging_config=None)
    both = Litestar(
        [],
        plugins=[
            SagaboxPlugin(first),
            SagaboxPlugin(second, transaction_key="offers_tx", sagas_key="offers"),
        ],
        logging_config=None,
    )
    assert {"transaction", "sagas", "offers_tx", "offers"} <= set(both.dependencies)
