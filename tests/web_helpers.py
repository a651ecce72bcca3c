"""A running offers system with a dashboard on it, for the HTTP and the browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from outbox.dead_letters import record_dead_letter
from outbox.envelope import CONTENT_TYPE, encode
from sagabox.testing import SagaHarness
from sagabox.web import create_app
from sagabox.web.security import BasicAuth
from tests.offer_app import OfferAccepted, OfferMade, make_app

USER, PASSWORD = "ops", "s3cret-pw"
SCRIPT = "<script>document.title='pwned'</script>"


def dashboard(harness: SagaHarness, **options: Any) -> Any:
    """The dashboard on the harness's database, actions enabled behind basic auth."""
    options.setdefault("actions", True)
    options.setdefault("authenticate", BasicAuth(USER, PASSWORD))
    return create_app(harness.apps[0].engine, apps=harness.apps, **options)


def seeded_harness(database_url: str) -> Iterator[SagaHarness]:
    """The offers system on `database_url`, seeded (the web tests' `harness` fixture)."""
    with SagaHarness(make_app(), database=database_url) as harness:
        seed(harness)
        yield harness


def seed(harness: SagaHarness) -> None:
    """Offers O-1..O-3 waiting, one offer whose id is a script, and three dead-lettered
    acceptances of O-1..O-3 in one group (a poison payload among other letters)."""
    harness.dispatch(*(OfferMade(offer_id=f"O-{n}") for n in (1, 2, 3)), OfferMade(offer_id=SCRIPT))
    with harness.transaction() as session:
        seed_dead_letters(session)


def seed_dead_letters(session: Session) -> None:
    """Three acceptances (O-1..O-3) dead-lettered for one reason, one poison with a script."""
    for n in (1, 2, 3):
        envelope = encode(OfferAccepted(offer_id=f"O-{n}"))
        record_dead_letter(
            session,
            endpoint="offers",
            body=envelope.payload.encode(),
            headers=envelope.headers,
            content_type=CONTENT_TYPE,
            reason="handler failed: DatabaseDown",
        )
    poison = encode(OfferAccepted(offer_id=SCRIPT))
    record_dead_letter(
        session,
        endpoint="offers",
        body=poison.payload.encode(),
        headers=poison.headers,
        content_type=CONTENT_TYPE,
        reason=f"bad input {SCRIPT}",
    )
