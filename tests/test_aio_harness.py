"""The time-travel harness from async tests: `AsyncSagaHarness` and its pytest fixture drive an
async service's sagas as the sync harness drives a sync one."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from datetime import timedelta

import pytest

from sagabox.aio_testing import AsyncSagaHarness
from sagabox.testing import DEFAULT_START
from tests.offer_app import (
    CustomerReminded,
    OfferAccepted,
    OfferClosed,
    OfferMade,
    OfferSaga,
    make_app,
)

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


async def test_reminders_and_expiry_fire_in_simulated_time(empty_database_url: str) -> None:
    """A saga started on an AsyncSession gets its day-2 and day-4 reminders and its day-7 expiry
    from one `await h.advance(...)`, each at its simulated time."""
    app = make_app()
    async with AsyncSagaHarness(app, database=empty_database_url) as h:
        async with h.transaction() as session:
            await app.aio.start(session, OfferSaga, OfferMade(offer_id="O-1"))
        await h.advance(8 * DAY)
        reminders = [s for s in h.shipped if isinstance(s.message, CustomerReminded)]
        assert [DEFAULT_START + 2 * DAY, DEFAULT_START + 4 * DAY] == [s.at for s in reminders]
        assert ["expired"] == [e.outcome for e in h.published(OfferClosed)]
        assert "expired" == await h.state(OfferSaga, "O-1")
        assert DEFAULT_START + 8 * DAY == h.now


async def test_the_fixture_reads_like_the_sync_harness(
    async_saga_harness: Callable[..., AsyncSagaHarness],
) -> None:
    """Accepting on day 3 cancels the rest; the event loop keeps real time meanwhile, so the
    service's own awaits and timeouts still work under the frozen clock."""
    loop = asyncio.get_running_loop()
    async with async_saga_harness(make_app()) as h:
        await h.dispatch(OfferMade(offer_id="O-1"))
        before = loop.time()
        await h.advance(3 * DAY)
        assert loop.time() > before  # real time passed on the loop while the clock jumped
        await asyncio.wait_for(asyncio.sleep(0.001), timeout=10)
        await h.dispatch(OfferAccepted(offer_id="O-1"))
        await h.advance(30 * DAY)
        assert 1 == len(h.published(CustomerReminded))
        assert "accepted" == await h.state(OfferSaga, "O-1")
        saga = await h.saga(OfferSaga, "O-1")
        assert saga is not None
        assert {} == saga.timeouts
        assert [("offers.OfferMade", "transition")] == [
            (row["trigger"], row["outcome"]) for row in (await h.journal(OfferSaga, "O-1"))[:1]
        ]


@pytest.mark.parametrize("module", ["sagabox.aio_testing", "sagabox.testing"])
def test_the_harness_without_the_testing_extra_names_the_pip_line(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without freezegun, importing either harness used to fail with a bare
    `No module named 'freezegun'`; it now says which install line brings it."""
    monkeypatch.setitem(sys.modules, "freezegun", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "freezegun.api", None)
    monkeypatch.delitem(sys.modules, "sagabox.aio_testing", raising=False)
    monkeypatch.delitem(sys.modules, "sagabox.testing", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'sagabox\[testing\]'"):
        importlib.import_module(module)
