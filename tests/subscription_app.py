"""A subscription saga that walks every unusual sequence of issue 15: a timeout rescheduled in
the transition that set it, a reminder that outlives its state into one that ignores it, a
wildcard cancel, renewals under the same correlation id after pruning, and one side effect
(a charge) per incarnation.

    new --Started--> charging --Charged--> active --Completed--> done
    any --Cancelled--> cancelled;  charging --Expire (day 8)--> expired
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from outbox import Command, Event
from sagas import Saga, SagaContext, Timeout, on

DAY = timedelta(days=1)


class Started(Event, type="subs.Started"):
    sub_id: str


class Charged(Event, type="subs.Charged"):
    sub_id: str


class Completed(Event, type="subs.Completed"):
    sub_id: str


class Cancelled(Event, type="subs.Cancelled"):
    sub_id: str


class Extend(Event, type="subs.Extend"):
    """Moves the expiry out again (a reschedule in a later transition)."""

    sub_id: str


class Rekey(Event, type="subs.Rekey"):
    """Asks the saga to change its own correlation id (which it must refuse)."""

    sub_id: str
    new_id: str


class Expire(Timeout, type="subs.Expire"):
    sub_id: str


class Remind(Timeout, type="subs.Remind"):
    sub_id: str


class ChargeCard(Command, type="subs.ChargeCard"):
    sub_id: str


class Booked(Event, type="subs.Booked"):
    sub_id: str


class SubscriptionData(BaseModel):
    reminders: int = 0


class SubscriptionSaga(Saga[SubscriptionData], name="subs.Subscription"):
    """One billing period: charge, then wait for completion; expire on day 8 if never charged."""

    states = [
        "new",
        "charging",
        "active",
        {"name": "done", "final": True},
        {"name": "expired", "final": True},
        {"name": "cancelled", "final": True},
    ]
    transitions = [
        on(Started, "new", "charging", after=["charge", "set_expiry", "extend_expiry"]),
        on(Charged, "charging", "active", after="book"),
        on(Extend, "charging", None, after="extend_expiry"),
        on(Remind, ["charging"], None, after="remind"),
        on(Expire, "charging", "expired"),
        on(Completed, "active", "done"),
        on(Cancelled, "*", "cancelled"),
        on(Rekey, ["charging", "active"], None, after="rekey"),
    ]
    correlation = {
        Started: "sub_id",
        Charged: "sub_id",
        Completed: "sub_id",
        Cancelled: "sub_id",
        Extend: "sub_id",
        Rekey: "sub_id",
        Expire: "sub_id",
        Remind: "sub_id",
    }
    ignore = {Remind: ["active"], Charged: ["active"], Extend: ["active"]}
    on_not_found = "ignore"

    def charge(self, ctx: SagaContext, message: Started) -> None:
        ctx.send(ChargeCard(sub_id=message.sub_id), to="payments")
        ctx.schedule("remind", Remind(sub_id=message.sub_id), after=DAY, outlive_state=True)

    def set_expiry(self, ctx: SagaContext, message: Started) -> None:
        ctx.schedule("expire", Expire(sub_id=message.sub_id), after=6 * DAY)

    def extend_expiry(self, ctx: SagaContext, message: Started | Extend) -> None:
        ctx.schedule("expire", Expire(sub_id=message.sub_id), after=8 * DAY)

    def remind(self, ctx: SagaContext, message: Remind) -> None:
        self.data.reminders += 1

    def book(self, ctx: SagaContext, message: Charged) -> None:
        ctx.publish(Booked(sub_id=message.sub_id))

    def rekey(self, ctx: SagaContext, message: Rekey) -> None:
        self.correlation_id = message.new_id
