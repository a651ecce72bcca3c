"""The README's saga example runs as printed."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Numeric, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from outbox import Message, MessageRegistry
from outbox.tables import outbox_messages
from sagabox import App
from sagas.tables import saga_instances
from tests import offer_app

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
    definition, usage = _section_code("A saga in 30 lines")
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
