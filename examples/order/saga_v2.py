"""Version 2 of the order saga, deployed while v1 orders are in flight.

    new ─OrderPlaced─▶ charging ─PaymentCharged─▶ screening ─OrderScreened─▶ allocating
    allocating ─InventoryReserved─▶ completed
    allocating ─OutOfStock─▶ cancelled (the refund is sent on the way: no `refunding` state)

What changed since v1, and what happens to the orders already running:

- `screening` is inserted after the charge. v1 orders in `charging` finish on the v1 path and
  skip it: the v1 transition is kept, marked `versions=(1,)` (the policy "finish_old_path").
- `reserving` is renamed `allocating`: v1 rows in it are loaded in `allocating`.
- `refunding` is removed: new orders cancel at once; v1 orders already refunding finish there
  (`removed = {"refunding": OLD_PATH}` keeps the state, and its marked transitions, for them).
- The data field `charge_attempts` is renamed `charges_sent`: the data upcaster renames it.

The actions that did not change are v1's (`OrderSteps`, in `saga.py`).
"""

from __future__ import annotations

from typing import Any

from sagas import OLD_PATH, SagaContext, on

from .messages import (
    ChargeOverdue,
    InventoryReserved,
    OrderPlaced,
    OrderScreened,
    OutOfStock,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ScreenOrder,
)
from .saga import RETRIES, OrderFields, OrderSaga, OrderSteps


class OrderDataV2(OrderFields):
    charges_sent: int = 0


class OrderSagaV2(OrderSteps[OrderDataV2], name="orders.Order"):
    """Orchestrates payment, screening and inventory for one order."""

    version = 2
    states = [
        "new",
        "charging",
        "screening",
        "allocating",
        {"name": "completed", "final": True},
        {"name": "cancelled", "final": True},
    ]
    renamed = {"reserving": "allocating"}
    removed = {"refunding": OLD_PATH}
    transitions = [
        on(OrderPlaced, "new", "charging", after="charge"),
        on(ChargeOverdue, "charging", None, conditions="may_retry", after="send_charge"),
        on(ChargeOverdue, "charging", "cancelled", after="give_up"),
        on(PaymentDeclined, "charging", "cancelled", after="declined"),
        on(PaymentCharged, "charging", "screening", after="screen"),
        on(OrderScreened, "screening", "allocating", after="reserve"),
        on(InventoryReserved, "allocating", "completed", after="complete"),
        on(OutOfStock, "allocating", "cancelled", after="refund_and_cancel"),
        # The v1 path, kept until the last v1 order is done.
        on(PaymentCharged, "charging", "allocating", after="reserve", versions=(1,)),
        on(OutOfStock, "allocating", "refunding", after="refund", versions=(1,)),
        on(PaymentRefunded, "refunding", "cancelled", after="out_of_stock", versions=(1,)),
    ]
    ignore = {PaymentCharged: ["screening", "allocating", "refunding"]}
    correlation = {**OrderSaga.correlation, OrderScreened: "order_id"}

    def send_charge(self, ctx: SagaContext, _cause: object) -> None:
        self.data.charges_sent += 1
        self._send_charge(ctx)

    def may_retry(self, ctx: SagaContext, _due: ChargeOverdue) -> bool:
        return self.data.charges_sent <= RETRIES

    def screen(self, ctx: SagaContext, _answer: PaymentCharged) -> None:
        ctx.send(
            ScreenOrder(
                order_id=self.correlation_id, customer=self.data.customer, amount=self.data.amount
            ),
            to="risk",
        )

    def refund_and_cancel(self, ctx: SagaContext, _answer: OutOfStock) -> None:
        self.refund(ctx, _answer)
        self._cancel(ctx, f"{self.data.sku} is out of stock; the payment is being refunded")

    def refund(self, ctx: SagaContext, _answer: OutOfStock) -> None:
        ctx.send(RefundPayment(order_id=self.correlation_id), to="payments")


@OrderSagaV2.data_upcaster(from_version=1)
def _charges_sent(data: dict[str, Any]) -> dict[str, Any]:
    """v1 called the number of charge requests sent `charge_attempts`."""
    data["charges_sent"] = data.pop("charge_attempts", 0)
    return data
