"""The dashboard under hostile input on every backend: ages, times, ids and NULs an attacker
or a slip of the hand sends get a clear 400/404 or a "not done" message, never a 500, and
change nothing; an async or empty-handed auth hook refuses rather than lets through; a letter
replayed from two tabs at once is queued once."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.testclient import TestClient

from outbox.dead_letter_groups import replay_logged
from outbox.dead_letters import DeadLetterNotFound
from outbox.operator_log import recent_actions
from outbox.tables import outbox_messages
from sagabox.cli import main
from sagabox.testing import SagaHarness
from sagabox.web.security import BasicAuth
from tests.offer_app import OfferMade, OfferSaga
from tests.pg_helpers import InThread, wait_until_blocked
from tests.web_helpers import PASSWORD, USER, dashboard, seeded_harness

AUTH = (USER, PASSWORD)
INSTANCE = f"/sagas/{OfferSaga.saga_type}/O-1"


harness = pytest.fixture(name="harness")(seeded_harness)


@pytest.fixture
def client(harness: SagaHarness) -> Iterator[TestClient]:
    with TestClient(dashboard(harness), raise_server_exceptions=False) as c:
        yield c


def _token(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(INSTANCE).text)
    assert match is not None
    return match[1]


def _timeout_form(token: str, **fields: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "saga_type": OfferSaga.saga_type,
        "correlation_id": "O-1",
        "name": "expire",
    }
    return {**form, **fields}


def _expire_due(harness: SagaHarness) -> Any:
    saga = harness.saga(OfferSaga, "O-1")
    assert saga is not None
    return saga.timeouts["expire"].due_at


@pytest.mark.parametrize("age", ["nan", "inf", "-inf", "-5", "1e20", "99999999999", "1" * 400])
def test_search_age_out_of_range_is_a_400(client: TestClient, age: str) -> None:
    """An age that is no finite, non-negative number of minutes within 100 years: 400."""
    page = client.get("/sagas", params={"older_than_minutes": age})
    assert 400 == page.status_code
    assert "minutes" in page.text
    assert len(page.text) < 200  # the input is quoted clipped, not echoed whole


@pytest.mark.parametrize(
    "due", ["+inf", "+nan", "+1e12", "+" + "9" * 400, "9999-12-31T23:59:59", "0001-01-01T00:00"]
)
def test_reschedule_to_an_unreachable_time_changes_nothing(
    harness: SagaHarness, client: TestClient, due: str
) -> None:
    """Infinite, NaN or centuries-away times: "not done" on the instance page, timeout kept."""
    before = _expire_due(harness)
    form = _timeout_form(_token(client), action="reschedule", due=due)
    done = client.post("/actions/timeout", data=form, auth=AUTH, follow_redirects=False)
    assert 303 == done.status_code
    page = client.get(done.headers["location"])
    assert 200 == page.status_code
    assert "not done" in page.text
    assert before == _expire_due(harness)
    with harness.transaction() as session:
        assert [] == recent_actions(session)


def test_dead_letter_ids_past_64_bits_name_no_letter(
    harness: SagaHarness, client: TestClient
) -> None:
    """A letter id too big for the column: 404 page, or "not done" for the form; none lost."""
    for letter_id in ("9223372036854775808", "9" * 30):
        assert 404 == client.get(f"/dead-letters/{letter_id}").status_code
        form = {"csrf_token": _token(client), "op": "discard", "id": letter_id}
        done = client.post("/actions/dead-letters", data=form, auth=AUTH)
        assert 200 == done.status_code
        assert "not done: no dead letter has id" in done.text
    assert 4 == len(harness.dead_letters())


@pytest.mark.parametrize("saga_type", ["", "a/b"])
def test_forged_timeout_form_without_an_instance_address_lands_on_search(
    client: TestClient, saga_type: str
) -> None:
    """A saga type no instance page can have: back to the search page saying why, not a 500."""
    form = _timeout_form(_token(client), action="cancel", saga_type=saga_type)
    done = client.post("/actions/timeout", data=form, auth=AUTH, follow_redirects=False)
    assert 303 == done.status_code
    assert done.headers["location"].startswith("/sagas?msg=not+done")


def test_nul_characters_are_refused_on_every_page_and_action(
    harness: SagaHarness, client: TestClient
) -> None:
    """PostgreSQL text holds no NUL: a NUL anywhere is a 400 (404 for a path), and no 500."""
    for params in ({"id": "O\x00"}, {"state": "\x00"}, {"after_type": "\x00", "after_id": "x"}):
        refused = client.get("/sagas", params=params)
        assert 400 == refused.status_code
        assert "NUL" in refused.text
    assert 404 == client.get(f"/sagas/{OfferSaga.saga_type}/O-1%00").status_code
    token = _token(client)
    group = {"csrf_token": token, "op": "discard", "endpoint": "offers\x00", "reason": "x"}
    timeout = _timeout_form(token, action="cancel", correlation_id="O-1\x00")
    for url, form in (("/actions/dead-letters", group), ("/actions/timeout", timeout)):
        assert 400 == client.post(url, data=form, auth=AUTH).status_code
    assert 4 == len(harness.dead_letters())
    assert {"expire", "remind"} == set(harness.saga(OfferSaga, "O-1").timeouts)  # type: ignore[union-attr]


def test_async_or_empty_auth_hook_refuses_and_an_async_name_is_the_actor(
    harness: SagaHarness,
) -> None:
    """A host app's async check is awaited: its None refuses (a coroutine object is no
    name), its name is logged; an empty name refuses too."""

    async def nobody(request: Request) -> str | None:
        return None

    async def alice(request: Request) -> str | None:
        return "alice"

    for check in (nobody, lambda request: ""):
        with TestClient(dashboard(harness, authenticate=check)) as client:
            refused = client.post(
                "/actions/timeout", data=_timeout_form(_token(client), action="cancel")
            )
            assert 401 == refused.status_code
    assert {"expire", "remind"} == set(harness.saga(OfferSaga, "O-1").timeouts)  # type: ignore[union-attr]
    with TestClient(dashboard(harness, authenticate=alice)) as client:
        done = client.post("/actions/timeout", data=_timeout_form(_token(client), action="cancel"))
        assert 200 == done.status_code
        assert "timeout expire cancelled" in done.text
    with harness.transaction() as session:
        assert [("alice", "timeout.cancel")] == [
            (a.actor, a.action) for a in recent_actions(session)
        ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_one_letter_replayed_from_two_tabs_at_once_is_queued_once(harness: SagaHarness) -> None:
    """Two replays of one letter at once: the second waits for the first, then finds it gone;
    the message is queued, logged and handled once."""
    engine = harness.apps[0].engine
    letter = next(d for d in harness.dead_letters() if "DatabaseDown" in d.reason)
    with engine.connect() as first:
        transaction = first.begin()
        replay_logged(first, letter.id, actor="tab-1")
        second = InThread(
            engine, "replay-tab-2", lambda c: replay_logged(c, letter.id, actor="tab-2")
        ).start()
        wait_until_blocked(engine, "replay-tab-2")
        transaction.commit()
        second.join()
    assert isinstance(second.error, DeadLetterNotFound)
    with engine.connect() as connection:
        queued = select(func.count()).where(outbox_messages.c.message_id == letter.message_id)
        assert 1 == connection.scalar(queued)
        assert [("tab-1", "dead_letter.replay")] == [
            (a.actor, a.action) for a in recent_actions(connection)
        ]
    harness.run_until_quiet()
    offer_id = json.loads(letter.body)["offer_id"]
    accepted = [
        row
        for row in harness.journal(OfferSaga, offer_id)
        if row["trigger"] == "offers.OfferAccepted"
    ]
    assert 1 == len(accepted)


def test_links_to_ids_holding_url_characters_reach_that_saga(
    harness: SagaHarness, client: TestClient
) -> None:
    """An id with `#`, `?`, `&` or spaces is quoted in its link and in an action's redirect,
    so both reach that saga's page, not a truncated id's 404."""
    ids = ["order#12", "a?b=1&c", "x y/z"]
    harness.dispatch(*(OfferMade(offer_id=offer_id) for offer_id in ids))
    listed = client.get("/sagas").text
    for offer_id in ids:
        href = re.search(r'<a href="([^"]+)">' + re.escape(html.escape(offer_id)) + "<", listed)
        assert href is not None, offer_id
        page = client.get(html.unescape(href[1]))
        assert 200 == page.status_code
        assert f'id="correlation-id">{html.escape(offer_id)}<' in page.text
    form = _timeout_form(_token(client), action="fire", correlation_id="order#12")
    done = client.post("/actions/timeout", data=form, auth=AUTH, follow_redirects=False)
    page = client.get(done.headers["location"])
    assert 'id="correlation-id">order#12<' in page.text
    assert "timeout expire is due now" in page.text


def test_basic_auth_takes_colons_in_the_password_and_refuses_them_in_the_user(
    harness: SagaHarness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The header splits at the first colon: a password with colons logs in, and a user with
    one (who never could) stops `sagabox web --actions` at start with one line."""
    with TestClient(dashboard(harness, authenticate=BasicAuth("ops", "a:b:c"))) as client:
        form = _timeout_form(_token(client), action="fire")
        assert 401 == client.post("/actions/timeout", data=form, auth=("ops", "a:b")).status_code
        done = client.post("/actions/timeout", data=form, auth=("ops", "a:b:c"))
        assert "timeout expire is due now" in done.text
    monkeypatch.setenv("SAGABOX_WEB_USER", "ops:a")
    monkeypatch.setenv("SAGABOX_WEB_PASSWORD", "b")
    assert 1 == main(["web", "--db", harness.database, "--actions"])
    (line,) = capsys.readouterr().err.splitlines()
    assert "holds a ':'" in line
