"""A trip booking saga whose three steps each declare their compensation, for those tests.

Hotel, then flight, then the card; a flight to "nowhere" fails in the middle, a "declined"
card fails the last step. The suppliers' compensation handlers write one row each, so a test
reads what was undone, in which order, and how often; `FLAKY` trips fail their hotel
cancellation once, to see a compensation retried like any command.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from outbox import Command, Event, HandlerContext, handles
from sagabox import App, RetryPolicy
from sagas import Saga, SagaContext, on, step

business = MetaData()
undone = Table(
    "trip_undone",
    business,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("trip_id", String(50), nullable=False),
    Column("what", String(50), nullable=False),
)


class TripRequested(Event, type="trips.TripRequested"):
    trip_id: str
    destination: str
    card: str


class BookHotel(Command, type="trips.BookHotel"):
    trip_id: str
    destination: str


class HotelBooked(Event, type="trips.HotelBooked"):
    trip_id: str


class CancelHotel(Command, type="trips.CancelHotel"):
    trip_id: str
    destination: str


class BookFlight(Command, type="trips.BookFlight"):
    trip_id: str
    destination: str


class FlightBooked(Event, type="trips.FlightBooked"):
    trip_id: str


class FlightUnavailable(Event, type="trips.FlightUnavailable"):
    trip_id: str


class CancelFlight(Command, type="trips.CancelFlight"):
    trip_id: str


class ChargeCard(Command, type="trips.ChargeCard"):
    trip_id: str
    card: str


class CardCharged(Event, type="trips.CardCharged"):
    trip_id: str


class CardDeclined(Event, type="trips.CardDeclined"):
    trip_id: str


class RefundCard(Command, type="trips.RefundCard"):
    trip_id: str
    card: str


class TripData(BaseModel):
    destination: str = ""
    card: str = ""


class TripSaga(Saga[TripData], name="trips.Trip"):
    """Hotel, flight, card; any failure after a completed step undoes it, newest first."""

    states = [
        "new",
        "hotel",
        "flight",
        "paying",
        {"name": "booked", "final": True},
        {"name": "cancelled", "final": True},
    ]
    steps = [
        step(BookHotel, compensate=CancelHotel, done=HotelBooked),
        step(BookFlight, compensate=CancelFlight, done=FlightBooked),
        step(ChargeCard, compensate=RefundCard, done=CardCharged),
    ]
    transitions = [
        on(TripRequested, "new", "hotel", after="book_hotel"),
        on(HotelBooked, "hotel", "flight", after="book_flight"),
        on(FlightBooked, "flight", "paying", after="charge"),
        on(FlightUnavailable, "flight", "cancelled", compensate=True),
        on(CardCharged, "paying", "booked"),
        on(CardDeclined, "paying", "cancelled", compensate=True),
    ]
    correlation = {
        message: "trip_id"
        for message in (
            TripRequested,
            HotelBooked,
            FlightBooked,
            FlightUnavailable,
            CardCharged,
            CardDeclined,
        )
    }

    def book_hotel(self, ctx: SagaContext, trip: TripRequested) -> None:
        self.data.destination, self.data.card = trip.destination, trip.card
        ctx.send(BookHotel(trip_id=trip.trip_id, destination=trip.destination), to="suppliers")

    def book_flight(self, ctx: SagaContext, _booked: HotelBooked) -> None:
        flight = BookFlight(trip_id=self.correlation_id, destination=self.data.destination)
        ctx.send(flight, to="suppliers")

    def charge(self, ctx: SagaContext, _booked: FlightBooked) -> None:
        ctx.send(ChargeCard(trip_id=self.correlation_id, card=self.data.card), to="suppliers")


#: Trips whose hotel cancellation fails on its first attempt.
FLAKY: set[str] = set()
attempts: Counter[str] = Counter()


class SupplierHiccup(Exception):
    """A transient failure of a supplier's cancellation."""


@handles(BookHotel)
def book_hotel(ctx: HandlerContext, command: BookHotel) -> None:
    ctx.publish(HotelBooked(trip_id=command.trip_id))


@handles(BookFlight)
def book_flight(ctx: HandlerContext, command: BookFlight) -> None:
    if command.destination == "nowhere":
        ctx.publish(FlightUnavailable(trip_id=command.trip_id))
    else:
        ctx.publish(FlightBooked(trip_id=command.trip_id))


@handles(ChargeCard)
def charge_card(ctx: HandlerContext, command: ChargeCard) -> None:
    if command.card == "declined":
        ctx.publish(CardDeclined(trip_id=command.trip_id))
    else:
        ctx.publish(CardCharged(trip_id=command.trip_id))


@handles(CancelHotel, CancelFlight, RefundCard)
def undo(ctx: HandlerContext, command: CancelHotel | CancelFlight | RefundCard) -> None:
    what = type(command).__name__
    attempts[f"{command.trip_id}/{what}"] += 1
    flaky = command.trip_id in FLAKY and isinstance(command, CancelHotel)
    if flaky and attempts[f"{command.trip_id}/{what}"] == 1:
        raise SupplierHiccup(f"the hotel's system is down ({command.trip_id})")
    ctx.session.execute(insert(undone).values(trip_id=command.trip_id, what=what))


def apps(
    *,
    database: str | None = None,
    broker: str | None = None,
    exchange: str = "sagabox",
    retry: RetryPolicy | None = None,
) -> list[App]:
    """The trip service (the saga) and the suppliers (plain handlers, retried by `retry`)."""
    return [
        App("trips", sagas=[TripSaga], inputs=[TripRequested], database=database, broker=broker,
            exchange=exchange),
        App("suppliers", handlers=[book_hotel, book_flight, charge_card, undo], retry=retry,
            database=database, broker=broker, exchange=exchange),
    ]  # fmt: skip
