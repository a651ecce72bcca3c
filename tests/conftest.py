"""Shared fixtures: a real database per test (SQLite file or PostgreSQL clone), the in-process
broker, a frozen clock, and a summary of how many tests ran on each backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import freezegun
import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from outbox.database import make_engine
from sagabox import migrate
from sagabox.testing import clear_memory_broker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

pytest_plugins = ["pytester"]

# pytest's own timings (--durations) must keep the real clock while a test freezes it, and so
# must kombu's waits: the in-process transport's `drain_events(timeout=...)` reads the monotonic
# clock, and frozen, a wait with nothing to receive never ends. (It kept the real clock only
# while freezegun, which looks five frames up, happened to find `threading` among them.)
freezegun.configure(extend_ignore_list=["_pytest", "kombu"])

# psycopg's C module checks the size of `datetime.date` when first imported; under a frozen
# clock it would see freezegun's stand-in. Import it now, while the clock is real.
with contextlib.suppress(ImportError):
    import psycopg  # noqa: F401

POSTGRES_ENV = "SAGABOX_TEST_POSTGRES_URL"
AMQP_ENV = "SAGABOX_TEST_AMQP_URL"
BACKENDS = ["sqlite", "postgresql"]


def _server_url(env: str, what: str) -> str:
    """The URL of a test server; missing means skip locally, but fail in CI (CI=true)."""
    url = os.environ.get(env)
    if url:
        return url
    reason = f"{what} is not available: ${env} is unset (start it with `scripts/services.sh up`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; in CI a test that needs a server must not skip")
    pytest.skip(reason)


# --- PostgreSQL: one template database with the migrations applied, cloned for each test ---


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _server_url(POSTGRES_ENV, "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_admin(postgres_url: str) -> Iterator[Engine]:
    """An autocommit engine on the server's main database, for CREATE/DROP DATABASE."""
    engine = make_engine(postgres_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def _create_database(admin: Engine, template: str | None = None) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    suffix = f" TEMPLATE {template}" if template else ""
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    return name


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_template(postgres_admin: Engine, postgres_url: str) -> Iterator[str]:
    name = _create_database(postgres_admin)
    migrate.upgrade(make_url(postgres_url).set(database=name))
    yield name
    _drop_database(postgres_admin, name)


# --- SQLite: one migrated file, copied for each test (faster than migrating each time) ---


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


# --- the backend-parametrized database fixtures tests use ---


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database this test runs on; tests taking it run once per backend."""
    return str(request.param)


def _fresh_database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool
) -> Iterator[str]:
    """A database for one test: a SQLite file, or a PostgreSQL database dropped afterwards;
    migrated ones are copied or cloned from the session's template."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    template = request.getfixturevalue("postgres_template") if migrated else None
    name = _create_database(admin, template=template)
    url = make_url(request.getfixturevalue("postgres_url")).set(database=name)
    yield url.render_as_string(hide_password=False)
    _drop_database(admin, name)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh database with sagabox's tables, for this test alone."""
    yield from _fresh_database(backend, request, tmp_path, migrated=True)


@pytest.fixture
def empty_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """The URL of a fresh database with no tables at all (for migration tests)."""
    yield from _fresh_database(backend, request, tmp_path, migrated=False)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on this test's own database, set up as sagabox's processes set theirs up."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# --- broker and clock ---


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    if request.node.get_closest_marker("second_lane") is None:
        # Asked for at run time (getfixturevalue) by a test the collection did not see needs
        # it: in scripts/test.sh it would share the broker with the second lane's tests.
        pytest.fail(
            f"{request.node.nodeid} uses RabbitMQ but is not in the second lane: take "
            "`amqp_url` as a parameter, or mark its module `pytestmark = pytest.mark.second_lane`"
        )
    return _server_url(AMQP_ENV, "RabbitMQ")


@pytest.fixture
def rabbitmq_control(amqp_url: str) -> Callable[[str], None]:
    """`control("stop")` / `control("start")` the RabbitMQ application our scripts started."""
    _server_url("SAGABOX_SERVICES_DIR", "control of the RabbitMQ started by scripts/services.sh")
    script = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"

    def control(action: str) -> None:
        subprocess.run([str(script), f"rabbitmq-{action}"], check=True, capture_output=True)

    return control


@pytest.fixture(params=["memory", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """A broker URL; tests taking it run on the in-process broker and on RabbitMQ."""
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("amqp_url"))
    return str(request.getfixturevalue("memory_broker"))


@pytest.fixture
def memory_broker() -> Iterator[str]:
    """kombu's in-process broker, emptied before and after: its queues are process-wide."""
    clear_memory_broker()
    yield "memory://"
    clear_memory_broker()


@pytest.fixture
def frozen_clock() -> Iterator[FrozenDateTimeFactory]:
    """Stop the clock at a fixed instant; `frozen_clock.tick(timedelta(...))` moves it."""
    with freeze_time("2026-01-05 09:00:00+00:00") as frozen:
        assert isinstance(frozen, FrozenDateTimeFactory)  # neither ticking nor auto-stepping
        yield frozen


# --- markers and the per-backend count printed at the end ---


# Modules that mostly wait on programs they run, put in the RabbitMQ tests' lane to even out the
# two pytest processes of scripts/test.sh.
_SECOND_LANE_MODULES = {"test_docs.py", "test_install.py", "test_alembic_project.py"}


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as each test is collected, before `-m` selects by these marks.
    callspec = getattr(item, "callspec", None)
    if (
        callspec is not None and callspec.params.get("backend") == "postgresql"
    ) or "postgres_url" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.postgres)
    if "amqp_url" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("broker_url") == "rabbitmq"
    ):
        item.add_marker(pytest.mark.rabbitmq)
    if item.get_closest_marker("rabbitmq") or item.path.name in _SECOND_LANE_MODULES:
        item.add_marker(pytest.mark.second_lane)


_passed: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        keywords = report.keywords
        if "postgres" in keywords:
            _passed["PostgreSQL"] += 1
        if "rabbitmq" in keywords:
            _passed["RabbitMQ"] += 1
        if "postgres" not in keywords and "rabbitmq" not in keywords:
            _passed["SQLite / in-process only"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _passed:
        terminalreporter.section("tests passed per backend")
        for name in ("SQLite / in-process only", "PostgreSQL", "RabbitMQ"):
            terminalreporter.write_line(f"{name}: {_passed[name]}")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio: sagabox's async seam is SQLAlchemy's asyncio layer."""
    return "asyncio"


@pytest.fixture
async def async_engine(database_url: str, anyio_backend: str) -> AsyncIterator[AsyncEngine]:
    """An async engine (aiosqlite or psycopg async) on this test's own database."""
    from outbox.aio import make_async_engine  # the asyncio extra: only where a test asks

    engine = make_async_engine(database_url)
    yield engine
    await engine.dispose()
