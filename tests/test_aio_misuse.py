"""Misuse of the sync admin and query functions from asyncio code, and starting a saga on an
App that does not run it: both fail at once with a named error that says what to do."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from outbox import clock
from outbox.database import make_engine
from outbox.dead_letter_groups import dead_letter_groups, discard_logged, group_ids, replay_logged
from outbox.dead_letters import (
    discard_dead_letter,
    get_dead_letter,
    list_dead_letters,
    replay_dead_letter,
)
from outbox.errors import AsyncSessionGiven
from outbox.inbox import prune_inbox
from outbox.operator_log import recent_actions
from outbox.retention import prune_dead_letters
from sagabox import App
from sagas import journal, store
from sagas.errors import UnknownSagaType
from sagas.migration import migrate_batch, occupied, plans
from sagas.queries import list_sagas, saga_detail, stuck_sagas
from sagas.retention import prune_finished, prune_journal
from sagas.tables import saga_instances
from sagas.timeout_admin import cancel_timeout, fire_timeout, list_timeouts, reschedule_timeout
from tests.saga_fixtures import Counter, LoanRequested, LoanSaga

pytestmark = pytest.mark.anyio

_WEEK = timedelta(days=7)

# Each sync function with the arguments it takes, called on an AsyncSession. Before, these
# failed with "'coroutine' object is not iterable" and the like, or half-ran.
SYNC_ONLY: list[tuple[str, Callable[[Any], object]]] = [
    ("list_dead_letters", lambda s: list_dead_letters(s)),
    ("get_dead_letter", lambda s: get_dead_letter(s, 1)),
    ("replay_dead_letter", lambda s: replay_dead_letter(s, 1)),
    ("discard_dead_letter", lambda s: discard_dead_letter(s, 1)),
    ("dead_letter_groups", lambda s: dead_letter_groups(s)),
    ("group_ids", lambda s: group_ids(s, "loans", None, "boom")),
    ("replay_logged", lambda s: replay_logged(s, 1, actor="ops")),
    ("discard_logged", lambda s: discard_logged(s, 1, actor="ops")),
    ("recent_actions", lambda s: recent_actions(s)),
    ("prune_inbox", lambda s: prune_inbox(s, older_than=_WEEK)),
    ("prune_dead_letters", lambda s: prune_dead_letters(s, older_than=_WEEK)),
    ("prune_finished", lambda s: prune_finished(s, older_than=_WEEK)),
    ("prune_journal", lambda s: prune_journal(s, older_than=_WEEK)),
    ("list_timeouts", lambda s: list_timeouts(s)),
    ("cancel_timeout", lambda s: cancel_timeout(s, "sagatest.Loan", "L-1", "t", actor="ops")),
    (
        "reschedule_timeout",
        lambda s: reschedule_timeout(
            s, "sagatest.Loan", "L-1", "t", due_at=clock.now(), actor="ops"
        ),
    ),
    ("fire_timeout", lambda s: fire_timeout(s, "sagatest.Loan", "L-1", "t", actor="ops")),
    ("list_sagas", lambda s: list_sagas(s)),
    ("stuck_sagas", lambda s: stuck_sagas(s, older_than=clock.now())),
    ("saga_detail", lambda s: saga_detail(s, "sagatest.Loan", "L-1")),
    ("journal_of", lambda s: journal.journal_of(s, uuid.uuid4())),
    ("occupied", lambda s: occupied(s, LoanSaga)),
    ("plans", lambda s: plans(s, LoanSaga)),
    ("migrate_batch", lambda s: migrate_batch(s, LoanSaga)),
]


@pytest.mark.parametrize(("name", "call"), SYNC_ONLY, ids=[name for name, _ in SYNC_ONLY])
async def test_sync_admin_functions_refuse_an_async_session(
    async_engine: AsyncEngine, name: str, call: Callable[[Any], object]
) -> None:
    """Each names itself and the run_sync call to make; the transaction stays usable and the
    same function called that way works."""
    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(AsyncSessionGiven, match=rf"{name}.*await session\.run_sync\(lambda s"):
            call(session)
        count = await session.execute(select(func.count()).select_from(saga_instances))
        assert 0 == count.scalar_one()


async def test_store_load_refuses_an_async_session_pointing_to_app_aio_load(
    async_engine: AsyncEngine,
) -> None:
    async with AsyncSession(async_engine) as session:
        with pytest.raises(AsyncSessionGiven, match=r"await app\.aio\.load\(session"):
            store.load(session, LoanSaga, "L-1")  # type: ignore[arg-type]  # the misuse under test
        with pytest.raises(AsyncSessionGiven, match="run_sync"):
            list_sagas(session)  # type: ignore[arg-type]


async def test_the_run_sync_form_the_error_names_works(async_engine: AsyncEngine) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        assert [] == await session.run_sync(lambda s: list_timeouts(s))


# --- App.start with a saga type the App does not run ---------------------------------------------


def _requested() -> LoanRequested:
    return LoanRequested(loan_id="L-1", amount=Decimal(2500))


def test_app_start_refuses_a_saga_the_app_does_not_run(database_url: str) -> None:
    """It used to start it: a saga row nobody's worker would ever route a message to."""
    app = App("counters", sagas=[Counter])
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            with pytest.raises(UnknownSagaType, match=r"'counters' does not run LoanSaga.*Counter"):
                app.start(session, LoanSaga, _requested())
            assert (
                0 == session.execute(select(func.count()).select_from(saga_instances)).scalar_one()
            )
    finally:
        engine.dispose()


async def test_app_aio_start_refuses_a_saga_the_app_does_not_run(
    async_engine: AsyncEngine,
) -> None:
    app = App("counters", sagas=[Counter])
    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(UnknownSagaType, match=r"its sagas: Counter\)"):
            await app.aio.start(session, LoanSaga, _requested())
        count = await session.execute(select(func.count()).select_from(saga_instances))
        assert 0 == count.scalar_one()
    # The App that does run it still starts it.
    async with AsyncSession(async_engine) as session, session.begin():
        saga = await App("loans", sagas=[LoanSaga]).aio.start(session, LoanSaga, _requested())
    assert saga.correlation_id == "L-1"
