"""The `saga_harness` and `async_saga_harness` pytest fixtures, registered through `pytest11`.

    def test_reminder(saga_harness):
        h = saga_harness(app, business=[my_metadata])
        h.dispatch(OfferMade(offer_id="O-1"))
        h.advance(timedelta(days=2))

`async_saga_harness` builds an `AsyncSagaHarness` the same way, for async tests:

    async def test_reminder(async_saga_harness):
        async with async_saga_harness(app) as h:
            await h.dispatch(OfferMade(offer_id="O-1"))

Each call gets a fresh database: a SQLite file in the test's temporary folder, or, with
`--sagabox-db URL` (or $SAGABOX_HARNESS_DATABASE_URL), a scratch database created on that
PostgreSQL server and dropped after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sagabox.aio_testing import AsyncSagaHarness
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
    with ExitStack() as cleanup:

        def build(*apps: App, **options: Any) -> SagaHarness:
            url = _database(request, tmp_path, cleanup, scratch_database)
            return cleanup.enter_context(SagaHarness(*apps, database=url, **options))

        yield build


@pytest.fixture
def async_saga_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., AsyncSagaHarness]]:
    """Build an `AsyncSagaHarness` on a fresh database, for `async with build(app) as h:`
    in an async test (a plain fixture, so it needs neither anyio nor pytest-asyncio)."""
    try:
        from sagabox.aio_testing import AsyncSagaHarness
        from sagabox.testing import scratch_database
    except ImportError as exc:
        raise ImportError(
            f"async_saga_harness needs freezegun and the asyncio extra ({exc}): "
            "pip install 'sagabox[testing,asyncio]'"
        ) from exc
    with ExitStack() as cleanup:

        def build(*apps: App, **options: Any) -> AsyncSagaHarness:
            url = _database(request, tmp_path, cleanup, scratch_database)
            return AsyncSagaHarness(*apps, database=url, **options)

        yield build


def _database(
    request: pytest.FixtureRequest, tmp_path: Path, cleanup: ExitStack, scratch: Any
) -> str:
    """A SQLite file in the test's folder, or a scratch database on the --sagabox-db server
    (the harness migrates either itself)."""
    from sagabox.settings import load_settings

    server = request.config.getoption("--sagabox-db") or load_settings().harness_database_url
    if server:
        url: str = cleanup.enter_context(_scratch(server, scratch))
        return url
    return f"sqlite:///{tmp_path / f'harness-{uuid.uuid4().hex[:8]}.db'}"


@contextmanager
def _scratch(server: str, scratch_database: Callable[..., Any]) -> Iterator[str]:
    """A scratch database on `server`, or a one-line failure that never shows its password.

    pytest prints the arguments of every frame of a traceback, and the driver's frames hold the
    password in plain text (psycopg's conninfo): so the URL travels as a SQLAlchemy `URL`, whose
    repr masks it, and a server that refuses is reported without the driver's traceback.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from outbox.urls import mask_secrets

    url = make_url(server)
    with ExitStack() as stack:
        try:
            # The harness migrates the database itself.
            database: str = stack.enter_context(
                scratch_database(url, migrated=False, prefix="sagabox_h")
            )
        except SQLAlchemyError as exc:
            lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            reason = "; ".join(line.strip() for line in lines)
        else:
            yield database
            return
    # Outside the `except`, so the driver's exception is not printed as this one's context.
    message = f"--sagabox-db {url!r}: cannot create a scratch database there: {reason}"
    pytest.fail(mask_secrets(message), pytrace=False)
