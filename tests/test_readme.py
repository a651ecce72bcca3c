"""The README's saga example runs as printed."""

from __future__ import annotations

import ast
import asyncio
import logging
import re
import sys
import types
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, Numeric, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from outbox import Message, MessageRegistry
from outbox.aio import make_async_engine
from outbox.tables import outbox_messages
from sagabox import App
from sagas.tables import saga_instances
from tests import offer_app
from tests.aio_helpers import serving

README = Path(__file__).parent.parent / "README.md"


class Base(DeclarativeBase):
    pass


class Loan(Base):
    """The service's own business table that the README's example writes to."""

    __tablename__ = "readme_loans"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))


def _section_code(title: str) -> list[str]:
    section = README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's messages reuse type names the examples also use (loans.LoanRequested): a
    real conflict in one process, so they register in a registry of their own here."""
    monkeypatch.setattr(Message, "registry", MessageRegistry())


@pytest.mark.usefixtures("own_registry")
def test_the_saga_in_30_lines_runs(engine: Engine) -> None:
    """The saga class is at most 30 lines, and starting it commits the loan, the saga and the
    credit-check command together."""
    definition, usage = _section_code("A saga in 30 lines")[:2]
    saga = definition[definition.index("class LoanSaga") :]
    assert len([line for line in saga.splitlines() if line.strip()]) <= 30
    Base.metadata.create_all(engine)
    namespace: dict[str, Any] = {"Session": Session, "engine": engine, "Loan": Loan}
    exec(compile(definition, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102 - our own README
    exec(compile(usage, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102

    with engine.connect() as connection:
        assert [("L-1", "checking")] == [
            tuple(row)
            for row in connection.execute(
                select(saga_instances.c.correlation_id, saga_instances.c.state)
            )
        ]
        assert ["credit.RunCreditCheck"] == list(connection.scalars(select(outbox_messages.c.type)))
    with Session(engine) as session:
        assert Decimal(2500) == session.get(Loan, "L-1").amount  # type: ignore[union-attr]


def test_the_time_travel_example_runs(saga_harness: Callable[..., Any]) -> None:
    """The README's harness test passes as printed, against the offer saga of the tests."""
    [example] = _section_code("Testing with time travel")
    namespace: dict[str, Any] = {"timedelta": timedelta, "App": App, **vars(offer_app)}
    exec(compile(example, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    namespace["test_accepting_on_day_3_cancels_the_rest"](saga_harness)


def _exec_awaiting(code: str, namespace: dict[str, Any]) -> Any:
    """Compile README code that may `await` at its top level; return its coroutine (or None)."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return eval(compile(code, "README.md", "exec", flags=flags, dont_inherit=True), namespace)  # noqa: S307 - our own README


@pytest.mark.usefixtures("own_registry")
def test_the_async_form_of_the_first_screen_runs(engine: Engine) -> None:
    """The AsyncSession form next to the sync one commits the loan, the saga and its command."""
    definition, _, async_usage = _section_code("A saga in 30 lines")
    Base.metadata.create_all(engine)
    namespace: dict[str, Any] = {"AsyncSession": AsyncSession, "Loan": Loan}
    exec(compile(definition, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102

    async def run() -> None:
        namespace["async_engine"] = make_async_engine(engine.url)
        try:
            await _exec_awaiting(async_usage, namespace)
        finally:
            await namespace["async_engine"].dispose()

    asyncio.run(run())
    with engine.connect() as connection:
        states = connection.execute(select(saga_instances.c.correlation_id, saga_instances.c.state))
        assert [("L-2", "checking")] == [tuple(row) for row in states]
        assert ["credit.RunCreditCheck"] == list(connection.scalars(select(outbox_messages.c.type)))
        assert [Decimal(900)] == list(connection.scalars(select(Loan.amount)))


def _asyncio_namespace(engine: Engine) -> dict[str, Any]:
    """The README's saga definitions, and the loan table, for the asyncio section's blocks."""
    definition = _section_code("A saga in 30 lines")[0]
    Base.metadata.create_all(engine)
    namespace: dict[str, Any] = {
        "App": App,
        "Loan": Loan,
        "database_url": engine.url.render_as_string(hide_password=False),
    }
    exec(compile(definition, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    return namespace


def _saga_states(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(saga_instances.c.correlation_id, saga_instances.c.state))
        return [(row.correlation_id, row.state) for row in rows]


@pytest.mark.usefixtures("own_registry")
def test_the_fastapi_recipe_runs(engine: Engine) -> None:
    """The README's FastAPI endpoint starts a saga in its request's transaction."""
    fastapi_block = _section_code("asyncio")[0]
    namespace = _asyncio_namespace(engine)
    exec(compile(fastapi_block, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    with serving(namespace["api"]) as base_url, httpx.Client(base_url=base_url) as client:
        response = client.post("/loans/L-3", params={"amount": "700"})
    assert (201, {"state": "checking"}) == (response.status_code, response.json())
    assert [("L-3", "checking")] == _saga_states(engine)


@pytest.mark.usefixtures("own_registry")
def test_the_litestar_recipe_runs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Litestar handler starts a saga in its request's transaction."""
    litestar_block = _section_code("asyncio")[1]
    # Litestar reads a handler's annotations in its module, so the block runs as a module.
    module = types.ModuleType("readme_litestar")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    namespace.update(_asyncio_namespace(engine))
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        exec(compile(litestar_block, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
        with serving(namespace["api"]) as base_url, httpx.Client(base_url=base_url) as client:
            response = client.post("/loans/L-4", params={"amount": "700"})
    finally:  # Litestar's default logging config set the root logger to INFO, process-wide
        root.setLevel(level)
        root.handlers[:] = handlers
    assert (201, {"state": "checking"}) == (response.status_code, response.json())
    assert [("L-4", "checking")] == _saga_states(engine)


def test_the_async_time_travel_example_runs(async_saga_harness: Callable[..., Any]) -> None:
    """The README's async harness test passes as printed, against the offer saga of the tests."""
    example = _section_code("asyncio")[2]
    namespace: dict[str, Any] = {"timedelta": timedelta, "App": App, **vars(offer_app)}
    exec(compile(example, "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    asyncio.run(namespace["test_accepting_on_day_3_cancels_the_rest"](async_saga_harness))
