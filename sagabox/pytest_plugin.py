"""The `saga_harness` pytest fixture, registered through the `pytest11` entry point.

    def test_reminder(saga_harness):
        h = saga_harness(app, business=[my_metadata])
        h.dispatch(OfferMade(offer_id="O-1"))
        h.advance(timedelta(days=2))

Each call gets a fresh database: a SQLite file in the test's temporary folder, or, with
`--sagabox-db URL` (or $SAGABOX_HARNESS_DATABASE_URL), a scratch database created on that
PostgreSQL server and dropped after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from outbox.database import make_engine

if TYPE_CHECKING:
    from sagabox.app import App
    from sagabox.testing import SagaHarness

ENV = "SAGABOX_HARNESS_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sagabox")
    group.addoption(
        "--sagabox-db",
        default=None,
        metavar="URL",
        help=f"run saga_harness on this PostgreSQL server instead of SQLite (env {ENV})",
    )


@pytest.fixture
def saga_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., SagaHarness]]:
    """Build a started `SagaHarness` for some apps; it is closed after the test."""
    try:
        from sagabox.testing import SagaHarness
    except ImportError as exc:  # the plugin loads wherever sagabox is installed; freezegun may not
        raise ImportError(
            f"saga_harness needs freezegun ({exc}): pip install 'sagabox[testing]'"
        ) from exc
    server = request.config.getoption("--sagabox-db") or os.environ.get(ENV)
    harnesses: list[SagaHarness] = []
    scratch: list[str] = []

    def build(*apps: App, **options: Any) -> SagaHarness:
        if server:
            name = f"sagabox_h_{uuid.uuid4().hex[:12]}"
            _admin(server, f'CREATE DATABASE "{name}"')
            scratch.append(name)
            url = make_url(server).set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{tmp_path / f'harness-{len(harnesses)}.db'}"
        harness = SagaHarness(*apps, database=url, **options).__enter__()
        harnesses.append(harness)
        return harness

    yield build
    for harness in harnesses:
        harness.close()
    for name in scratch:
        _admin(server or "", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(server: str, statement: str) -> None:
    engine = make_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()
