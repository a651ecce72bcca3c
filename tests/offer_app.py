"""An offer saga with reminders and an expiry, for the timeout and harness tests.

Day 0 the offer is made; reminders go out on days 2 and 4; on day 7 it expires. Accepting it
cancels whatever is still pending.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from outbox import Event
from sagabox import App
from sagas import Saga, SagaContext, Timeout, on


class OfferMade(Event, type="offers.OfferMade"):
    offer_id: str


class OfferAccepted(Event, type="offers.OfferAccepted"):
    offer_id: str


class OfferCountered(Event, type="offers.OfferCountered"):
    """The customer asks for other terms: the offer is negotiated, no longer waiting."""

    offer_id: str


class OfferReminder(Timeout, type="offers.OfferReminder"):
    offer_id: str


class OfferExpired(Timeout, type="offers.OfferExpired"):
    offer_id: str


class CustomerReminded(Event, type="offers.CustomerReminded"):
    offer_id: str
    number: int


class OfferClosed(Event, type="offers.OfferClosed"):
    offer_id: str
    outcome: str


class OfferData(BaseModel):
    reminders: int = 0


class OfferSaga(Saga[OfferData], name="offers.Offer"):
    """Made → (reminded on days 2 and 4) → accepted, or expired on day 7; a counter-offer
    moves it to negotiating, where the offer's reminders and expiry no longer apply."""

    states = [
        "new",
        "offered",
        "negotiating",
        {"name": "accepted", "final": True},
        {"name": "expired", "final": True},
    ]
    transitions = [
        on(OfferMade, "new", "offered", after="start_clock"),
        on(OfferReminder, "offered", None, after="remind"),
        on(OfferExpired, "offered", "expired", after="close"),
        on(OfferAccepted, ["offered", "negotiating"], "accepted", after="close"),
        on(OfferCountered, "offered", "negotiating"),
    ]
    correlation = {
        OfferMade: "offer_id",
        OfferAccepted: "offer_id",
        OfferCountered: "offer_id",
        OfferReminder: "offer_id",
        OfferExpired: "offer_id",
    }

    def start_clock(self, ctx: SagaContext, made: OfferMade) -> None:
        reminder = OfferReminder(offer_id=made.offer_id)
        ctx.schedule("remind", reminder, every=timedelta(days=2), times=2)
        ctx.schedule("expire", OfferExpired(offer_id=made.offer_id), after=timedelta(days=7))

    def remind(self, ctx: SagaContext, reminder: OfferReminder) -> None:
        self.data.reminders += 1
        ctx.publish(CustomerReminded(offer_id=reminder.offer_id, number=self.data.reminders))

    def close(self, ctx: SagaContext, message: OfferExpired | OfferAccepted) -> None:
        ctx.publish(OfferClosed(offer_id=message.offer_id, outcome=self.state_name))


def make_app() -> App:
    return App("offers", sagas=[OfferSaga])
