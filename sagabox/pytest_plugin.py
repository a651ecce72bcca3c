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
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

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
        from sagabox.testing import SagaHarness, scratch_database
    except ImportError as exc:  # the plugin loads wherever sagabox is installed; freezegun may not
        raise ImportError(
            f"saga_harness needs freezegun ({exc}): pip install 'sagabox[testing]'"
        ) from exc
    server = request.config.getoption("--sagabox-db") or os.environ.get(ENV)
    with ExitStack() as cleanup:

        def build(*apps: App, **options: Any) -> SagaHarness:
            if server:
                # The harness migrates the database itself.
                url = cleanup.enter_context(
                    scratch_database(server, migrated=False, prefix="sagabox_h")
                )
            else:
                url = f"sqlite:///{tmp_path / f'harness-{uuid.uuid4().hex[:8]}.db'}"
            return cleanup.enter_context(SagaHarness(*apps, database=url, **options))

        yield build
