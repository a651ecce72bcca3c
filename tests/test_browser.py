"""The dashboard in a real headless Chromium (Debian's, through chromedriver) against a running
offers system on every backend: search, path, reschedule, group replay, refusal, escaping.

Set SAGABOX_SCREENSHOTS=docs/images to save the screenshots of the main pages for the docs.
In CI (CI=true) a missing browser fails the run instead of skipping.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.orm import Session

from outbox.writer import Outbox
from sagabox.app import App
from sagabox.web import create_app
from sagabox.web.security import BasicAuth
from tests.offer_app import OfferMade, OfferSaga, make_app
from tests.web_helpers import PASSWORD, SCRIPT, USER, seed_dead_letters

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
SHOTS_ENV = "SAGABOX_SCREENSHOTS"


class RunningOffers:
    """The offers app on a real database and the in-process broker, with the real clock."""

    def __init__(self, database_url: str, broker_url: str) -> None:
        self.app: App = make_app()
        self.app.configure(database=database_url, broker=broker_url)
        self.worker = self.app.worker()
        self.worker.drain()  # declares the queue before anything is published
        self.relay = self.app.relay(listen=False)

    def settle(self) -> None:
        """Relay and work until nothing moves (bounded: a loop would fail the test)."""
        for _ in range(100):
            if self.relay.drain() == 0 and self.worker.drain() == 0:
                return
        raise AssertionError("the system did not settle in 100 rounds")

    def publish(self, *messages: Any) -> None:
        with Session(self.app.engine) as session, session.begin():
            for message in messages:
                Outbox(session).add(message)
        self.settle()

    def state(self, offer_id: str) -> str | None:
        with Session(self.app.engine) as session:
            saga = self.app.runtime.load(session, OfferSaga, offer_id)
        return None if saga is None else saga.state_name

    def timeouts(self, offer_id: str) -> set[str]:
        with Session(self.app.engine) as session:
            saga = self.app.runtime.load(session, OfferSaga, offer_id)
        return set() if saga is None else set(saga.timeouts)

    def close(self) -> None:
        self.relay.close()
        self.app.engine.dispose()


class Server:
    """uvicorn serving an ASGI app on a port bound before the thread starts (no start race)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def system(database_url: str, memory_broker: str) -> Iterator[RunningOffers]:
    running = RunningOffers(database_url, memory_broker)
    running.publish(*(OfferMade(offer_id=f"O-{n}") for n in (1, 2, 3)))
    running.publish(OfferMade(offer_id=SCRIPT))
    with Session(running.app.engine) as session, session.begin():
        seed_dead_letters(session)
    yield running
    running.close()


@pytest.fixture
def server(system: RunningOffers) -> Iterator[Server]:
    app = create_app(
        system.app.engine,
        apps=[system.app],
        actions=True,
        authenticate=BasicAuth(USER, PASSWORD),
        refresh_seconds=2,
    )
    running = Server(app)
    yield running
    running.close()


Browser = Callable[..., Any]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Start Chromium sessions (with or without the dashboard's credentials)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        missing = "install Debian's chromium and chromium-driver (scripts/browser.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"no browser in CI: {missing}")
        pytest.skip(missing)
    drivers: list[Any] = []

    def start(*, credentials: bool = True) -> Any:
        options = Options()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / f'profile-{len(drivers)}'}")
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(30)
        if credentials:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
            )
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get(SHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _instance(server: Server, offer_id: str) -> str:
    return f"{server.url}/sagas/{OfferSaga.saga_type}/{quote(offer_id, safe='')}"


def _follow(driver: Any, clickable: Any) -> None:
    """Click a link or a form's button and wait until the page it was on is gone: read at once,
    the old page (its own results, its own flash) or a page half replaced would answer."""
    page = driver.find_element(By.TAG_NAME, "html")
    clickable.click()
    WebDriverWait(driver, 10).until(staleness_of(page))


def _timeout_row(driver: Any, name: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-timeout="{name}"]')


def test_search_finds_a_saga_and_its_page_shows_the_path(server: Server, browser: Browser) -> None:
    """Searching O-2 lists it; its page shows the path new → offered and the diagram."""
    driver = browser()
    driver.get(server.url + "/")
    assert "offers.Offer" in driver.find_element(By.ID, "live").text
    _shot(driver, "overview")
    driver.get(server.url + "/sagas")
    driver.find_element(By.ID, "search-id").send_keys("O-2")
    _follow(driver, driver.find_element(By.ID, "search-go"))
    results = driver.find_element(By.ID, "results")
    assert ["O-2"] == [link.text for link in results.find_elements(By.TAG_NAME, "a")]
    _shot(driver, "search")
    _follow(driver, results.find_element(By.LINK_TEXT, "O-2"))
    path = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#path li")]
    assert ["new", "offered"] == path
    current = driver.find_element(By.CSS_SELECTOR, "svg.machine .state.current")
    assert "offered" == current.get_attribute("data-state")
    _shot(driver, "instance")
    driver.get(server.url + "/graph")
    assert "offers.OfferExpired" in driver.find_element(By.ID, "mermaid").text
    _shot(driver, "graph")


def test_rescheduling_moves_the_timeout_and_the_saga_reacts_when_it_fires(
    server: Server, system: RunningOffers, browser: Browser
) -> None:
    """Reschedule the expiry to +30 min: its due time changes; fire it now: the offer expires."""
    driver = browser()
    driver.get(_instance(server, "O-1"))
    before = _timeout_row(driver, "expire").find_element(By.CLASS_NAME, "due").text
    row = _timeout_row(driver, "expire")
    row.find_element(By.CLASS_NAME, "due-input").send_keys("+30")
    _follow(driver, row.find_element(By.CSS_SELECTOR, "button.reschedule"))
    assert "moved to" in driver.find_element(By.ID, "flash").text
    after = _timeout_row(driver, "expire").find_element(By.CLASS_NAME, "due").text
    assert before != after
    assert after < before  # day 7 became half an hour from now
    system.settle()
    assert "offered" == system.state("O-1")  # not due yet
    _follow(driver, _timeout_row(driver, "expire").find_element(By.CSS_SELECTOR, "button.fire"))
    assert "due now" in driver.find_element(By.ID, "flash").text
    system.settle()
    assert "expired" == system.state("O-1")
    driver.refresh()
    assert "expired" == driver.find_element(By.ID, "state").text
    assert [] == driver.find_elements(By.CSS_SELECTOR, "#timeouts")
    journal = driver.find_element(By.ID, "journal").text
    assert f"by {USER}" in journal
    assert "offers.OfferExpired" in journal


def test_replaying_a_dead_letter_group_handles_each_message_once(
    server: Server, system: RunningOffers, browser: Browser
) -> None:
    """One click replays the three acceptances; each offer takes the acceptance once."""
    driver = browser()
    driver.get(server.url + "/dead-letters")
    _shot(driver, "dead-letters")
    (group,) = [
        section
        for section in driver.find_elements(By.CSS_SELECTOR, "section.group")
        if section.find_element(By.CLASS_NAME, "reason").text == "handler failed: DatabaseDown"
    ]
    _follow(driver, group.find_element(By.CSS_SELECTOR, "button.replay-group"))
    assert "replay: 3 of 3 dead letters" in driver.find_element(By.ID, "flash").text
    system.settle()
    system.settle()  # a second pass finds nothing more to do: nothing is handled twice
    for n in (1, 2, 3):
        assert "accepted" == system.state(f"O-{n}")
    log = driver.find_element(By.ID, "log").text
    assert log.count("dead_letter.replay") == 3
    for n in (1, 2, 3):
        driver.get(_instance(server, f"O-{n}"))
        journal = driver.find_element(By.ID, "journal").text
        assert 1 == journal.count("offers.OfferAccepted")


def test_an_action_without_credentials_is_refused(
    server: Server, system: RunningOffers, browser: Browser
) -> None:
    """A browser without the credentials sees the forms, but cancelling is refused (401: the
    browser is asked for credentials) and the timeout stays pending."""
    driver = browser(credentials=False)
    driver.get(_instance(server, "O-2"))
    _timeout_row(driver, "expire").find_element(By.CSS_SELECTOR, "button.cancel").click()
    assert [] == driver.find_elements(By.ID, "flash")  # no "cancelled" page came back
    assert {"expire", "remind"} == system.timeouts("O-2")
    fresh = browser()
    fresh.get(_instance(server, "O-2"))
    assert [] != fresh.find_elements(By.CSS_SELECTOR, 'tr[data-timeout="expire"]')


def test_a_script_payload_is_shown_as_text(server: Server, browser: Browser) -> None:
    """The offer whose id is a `<script>`: shown verbatim as text, never run."""
    driver = browser()
    driver.get(_instance(server, SCRIPT))
    assert SCRIPT == driver.find_element(By.ID, "correlation-id").text
    assert "pwned" != driver.title
    driver.get(server.url + "/dead-letters")
    assert SCRIPT in driver.find_element(By.TAG_NAME, "main").text
    assert "pwned" != driver.title
