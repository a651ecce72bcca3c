"""The dashboard over HTTP on every backend: pages, search paging, actions, and refusals (no
credentials, no CSRF token, read-only), with hostile message data shown as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from outbox.dead_letters import record_dead_letter
from outbox.envelope import CONTENT_TYPE, encode
from outbox.operator_log import recent_actions
from sagabox.testing import DEFAULT_START, SagaHarness
from sagabox.web import create_app
from tests.offer_app import OfferAccepted, OfferMade, OfferSaga
from tests.web_helpers import PASSWORD, SCRIPT, USER, dashboard, seeded_harness

AUTH = (USER, PASSWORD)
ESCAPED = "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"


harness = pytest.fixture(name="harness")(seeded_harness)


@pytest.fixture
def client(harness: SagaHarness) -> Iterator[TestClient]:
    with TestClient(dashboard(harness)) as c:
        yield c


def _token(client: TestClient, url: str) -> str:
    page = client.get(url)
    assert 200 == page.status_code
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match[1]


def _instance(offer_id: str) -> str:
    return f"/sagas/{OfferSaga.saga_type}/{offer_id}"


def test_overview_counts_states_and_dead_letters(client: TestClient) -> None:
    """The front page shows the type x state table, the dead-letter groups and soon timeouts."""
    page = client.get("/")
    assert 200 == page.status_code
    assert "offers.Offer" in page.text
    assert "handler failed: DatabaseDown" in page.text
    live = client.get("/live/overview")
    assert 200 == live.status_code
    assert "<html" not in live.text  # a fragment, swapped in by refresh.js


def test_search_by_prefix_pages_with_a_keyset(harness: SagaHarness) -> None:
    """25 offers found by prefix in pages of 10: every one exactly once, in id order."""
    harness.dispatch(*(OfferMade(offer_id=f"Q-{n:02}") for n in range(25)))
    from sagabox.web import data

    seen: list[str] = []
    after = None
    with harness.transaction() as session:
        while True:
            page = data.search(session, data.Search(prefix="Q-", after=after, limit=10))
            seen.extend(row.correlation_id for row in page.rows)
            if page.next_after is None:
                break
            after = page.next_after
    assert [f"Q-{n:02}" for n in range(25)] == seen
    with TestClient(dashboard(harness)) as client:
        first = client.get("/sagas", params={"id": "Q-"})
        assert "Q-00" in first.text
        assert "Q-24" in first.text  # 50 a page: all 25 here
        assert "next-page" not in first.text
        stuck = client.get("/sagas", params={"stuck": "1"})
        assert "No saga matches" in stuck.text  # every offer waits for a live timeout


def test_age_search_follows_its_next_page_links(harness: SagaHarness) -> None:
    """55 offers made a minute apart, searched by age: oldest first, and the next page's link
    carries the cursor row's creation time, so the second page starts right after the first."""
    for n in range(55):
        harness.clock.tick(timedelta(minutes=1))
        harness.dispatch(OfferMade(offer_id=f"A-{n:02}"))
    harness.clock.tick(timedelta(days=1))
    with TestClient(dashboard(harness)) as client:
        first = client.get("/sagas", params={"older_than_minutes": "60"})
        ids = re.findall(r">(A-\d\d)</a>", first.text)
        assert [f"A-{n:02}" for n in range(46)] == ids  # after the 4 seeded offers
        link = re.search(r'id="next-page" href="([^"]+)"', first.text)
        assert link is not None
        assert "after_created=" in link[1]
        second = client.get("/sagas" + link[1].replace("&amp;", "&"))
        assert [f"A-{n:02}" for n in range(46, 55)] == re.findall(r">(A-\d\d)</a>", second.text)
        assert "next-page" not in second.text
        refused = client.get("/sagas", params={"older_than_minutes": "60", "after_created": "x"})
        assert 400 == refused.status_code


def test_search_prefix_escapes_like_wildcards(client: TestClient) -> None:
    """A `%` in the prefix is a literal character, not a wildcard."""
    assert "No saga matches" in client.get("/sagas", params={"id": "%"}).text
    assert "O-1" in client.get("/sagas", params={"id": "O-"}).text


def test_instance_page_shows_path_diagram_timeouts_and_journal(client: TestClient) -> None:
    """The instance page: its path, the SVG with the current state, both timeouts, journal."""
    page = client.get(_instance("O-1"))
    assert 200 == page.status_code
    assert 'class="state current"' in page.text
    assert 'data-state="offered"' in page.text
    assert 'data-timeout="remind"' in page.text
    assert 'data-timeout="expire"' in page.text
    assert "offers.OfferMade" in page.text
    assert "accepted, expired, negotiating" in page.text  # still reachable


def test_script_payload_is_shown_as_text(client: TestClient) -> None:
    """An offer id and a dead letter holding `<script>` come out escaped on every page."""
    pages = [
        client.get("/sagas", params={"id": "<"}).text,
        client.get(_instance(SCRIPT)).text,
        client.get("/dead-letters").text,
        client.get("/").text,
    ]
    for text in pages:
        assert SCRIPT not in text
    assert ESCAPED in pages[1]
    assert ESCAPED in pages[2]


def test_reschedule_through_the_form_moves_the_timeout(
    harness: SagaHarness, client: TestClient
) -> None:
    """Rescheduling the expiry to +60 minutes moves it; the saga expires when it fires."""
    token = _token(client, _instance("O-1"))
    form = {
        "csrf_token": token,
        "saga_type": OfferSaga.saga_type,
        "correlation_id": "O-1",
        "name": "expire",
        "action": "reschedule",
        "due": "+60",
    }
    done = client.post("/actions/timeout", data=form, auth=AUTH, follow_redirects=False)
    assert 303 == done.status_code
    page = client.get(done.headers["location"])
    assert "moved to" in page.text
    assert (DEFAULT_START + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S") in page.text
    harness.advance(timedelta(hours=1))
    assert "expired" == harness.state(OfferSaga, "O-1")
    assert "offered" == harness.state(OfferSaga, "O-2")
    with harness.transaction() as session:
        assert [(USER, "timeout.reschedule")] == [
            (a.actor, a.action) for a in recent_actions(session)
        ]


def test_replaying_a_group_handles_each_message_once(
    harness: SagaHarness, client: TestClient
) -> None:
    """Replay of the DatabaseDown group: O-1..O-3 accepted, one transition each, group gone."""
    done = _replay_database_down(client)
    assert "replay: 3 of 3 dead letters" in done
    harness.run_until_quiet()
    for n in (1, 2, 3):
        assert "accepted" == harness.state(OfferSaga, f"O-{n}")
        accepted = [
            row
            for row in harness.journal(OfferSaga, f"O-{n}")
            if row["trigger"] == "offers.OfferAccepted"
        ]
        assert 1 == len(accepted)
    assert [f"bad input {SCRIPT}"] == [letter.reason for letter in harness.dead_letters()]


def test_a_letter_of_a_group_the_outbox_refuses_holds_up_no_other(
    harness: SagaHarness, client: TestClient
) -> None:
    """A letter whose correlation id no partition key can hold (it was dead-lettered for it)
    is reported by id while the rest of its group is replayed; the refusal, a ValueError,
    ended the group's replay and its count."""
    long = encode(OfferAccepted(offer_id="O-9", correlation_id="c" * 256))
    with harness.transaction() as session:
        record_dead_letter(
            session,
            endpoint="offers",
            body=long.payload.encode(),
            headers=long.headers,
            content_type=CONTENT_TYPE,
            reason="handler failed: DatabaseDown",
        )
    done = _replay_database_down(client)
    assert "replay: 3 of 4 dead letters; not done: " in done
    assert "partition_key" in done


def test_dead_letter_groups_are_paged_largest_first(harness: SagaHarness) -> None:
    """27 groups: the first page lists the 20 largest and links the next, which lists the
    other 7; the count of letters is shown above them."""
    with harness.transaction() as session:
        for n in range(25):
            for _ in range(1 + n % 3):
                record_dead_letter(
                    session,
                    endpoint="e",
                    body=b"{}",
                    headers={},
                    content_type=None,
                    reason=f"cause {n:02}",
                )
    with TestClient(dashboard(harness)) as client:
        first = client.get("/dead-letters")
        assert 20 == first.text.count('<section class="group"')
        assert "53 letters in 27 groups" in first.text  # 25 groups of 1-3 and the seeded 4
        assert "cause 02" in first.text  # a group of 3
        assert 'href="/dead-letters?page=2"' in first.text
        second = client.get("/dead-letters", params={"page": "2"})
        assert 7 == second.text.count('<section class="group"')
        assert "cause 24" in second.text  # a group of 1
        assert "cause 24" not in first.text
        assert "next-groups" not in second.text
        assert 400 == client.get("/dead-letters", params={"page": "two"}).status_code


def test_action_without_credentials_is_refused(harness: SagaHarness, client: TestClient) -> None:
    """No or wrong basic credentials: 401 with a challenge, and the timeout is untouched."""
    token = _token(client, _instance("O-1"))
    form = {
        "csrf_token": token,
        "saga_type": OfferSaga.saga_type,
        "correlation_id": "O-1",
        "name": "expire",
        "action": "cancel",
    }
    anonymous = client.post("/actions/timeout", data=form)
    wrong = client.post("/actions/timeout", data=form, auth=(USER, "wrong"))
    for refused in (anonymous, wrong):
        assert 401 == refused.status_code
        assert refused.headers["www-authenticate"].startswith("Basic")
    saga = harness.saga(OfferSaga, "O-1")
    assert saga is not None
    assert {"expire", "remind"} == set(saga.timeouts)


def test_action_without_csrf_token_is_refused(harness: SagaHarness, client: TestClient) -> None:
    """Right credentials but a missing or forged token: 403, nothing done."""
    _token(client, "/dead-letters")  # sets the cookie
    for token in ("", "forged"):
        form = {"csrf_token": token, "op": "discard", "id": "1"}
        refused = client.post("/actions/dead-letters", data=form, auth=AUTH)
        assert 403 == refused.status_code
    assert 4 == len(harness.dead_letters())


def test_read_only_dashboard_refuses_every_action(harness: SagaHarness) -> None:
    """Without actions enabled no form is shown and a POST gets 403."""
    with TestClient(create_app(harness.apps[0].engine)) as client:
        page = client.get(_instance("O-1"))
        assert "Fire now" not in page.text
        assert "read-only" in page.text
        refused = client.post("/actions/dead-letters", data={"op": "discard", "id": "1"})
        assert 403 == refused.status_code
    assert 4 == len(harness.dead_letters())


def test_actions_without_any_authentication_do_not_start(
    harness: SagaHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`actions=True` with no credentials configured is refused at start, saying what to set."""
    monkeypatch.delenv("SAGABOX_WEB_USER", raising=False)
    with pytest.raises(ValueError, match="SAGABOX_WEB_USER"):
        create_app(harness.apps[0].engine, actions=True)


def test_graph_page_shows_flow_and_findings(client: TestClient) -> None:
    """The message-flow page carries the Mermaid text of `sagabox graph`."""
    page = client.get("/graph")
    assert 200 == page.status_code
    assert "ep_offers -.-&gt;|offers.OfferExpired| ep_offers" in page.text


def test_mounted_under_a_prefix(harness: SagaHarness) -> None:
    """Mounted in a host app, links and forms carry the mount path."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    host = Starlette(routes=[Mount("/ops", app=dashboard(harness))])
    with TestClient(host) as client:
        page = client.get("/ops/sagas", params={"id": "O-1"})
        assert 200 == page.status_code
        assert 'href="/ops/sagas/offers.Offer/O-1"' in page.text
        assert "/ops/static/style.css" in page.text
        assert 200 == client.get("/ops/static/style.css").status_code


def test_readme_mount_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harness: SagaHarness
) -> None:
    """The README's mounting example runs as written, and its auth hook names the actor."""
    readme = Path(__file__).parent.parent / "README.md"
    section = readme.read_text().split("## Operations dashboard\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    namespace["engine"].dispose()
    with TestClient(namespace["app"]) as client:
        assert 200 == client.get("/sagabox/static/style.css").status_code
        refused = client.post("/sagabox/actions/timeout", data={})
        assert 401 == refused.status_code


def test_sagabox_web_with_actions_but_no_credentials_exits_with_one_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sagabox web --actions` without SAGABOX_WEB_USER/PASSWORD refuses to start, saying why."""
    monkeypatch.delenv("SAGABOX_WEB_USER", raising=False)
    monkeypatch.delenv("SAGABOX_WEB_PASSWORD", raising=False)
    from sagabox.cli import main

    assert 1 == main(["web", "--db", database_url, "--actions"])
    (line,) = capsys.readouterr().err.splitlines()
    assert "SAGABOX_WEB_USER" in line


def _replay_database_down(client: TestClient) -> str:
    """Replay the seeded group of OfferAccepted letters dead-lettered for DatabaseDown; the
    page that answers."""
    form = {
        "csrf_token": _token(client, "/dead-letters"),
        "op": "replay",
        "endpoint": "offers",
        "type": "offers.OfferAccepted",
        "reason": "handler failed: DatabaseDown",
    }
    return client.post("/actions/dead-letters", data=form, auth=AUTH).text
