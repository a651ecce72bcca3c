"""The payment saga, with the order of its two checks given in one place: `flow(...)`.

Ledger first: debit, screen, execute; a beneficiary that fails screening gets the debit reversed.
AML first: screen, debit, execute; a failed screening has nothing to undo. Choreographed, the
same change would touch three services (see the seed article); here it is one argument.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from sagas import Saga, SagaContext, on

from .messages import (
    AccountDebited,
    BeneficiaryScreened,
    DebitAccount,
    DebitReversed,
    ExecutePayment,
    PaymentCompleted,
    PaymentExecuted,
    PaymentRejected,
    PaymentRequested,
    ReverseDebit,
    ScreenBeneficiary,
)

Step = Literal["ledger", "aml"]
_WAITING = {"ledger": "debiting", "aml": "screening"}
_RESULT: dict[str, type[AccountDebited | BeneficiaryScreened]] = {
    "ledger": AccountDebited,
    "aml": BeneficiaryScreened,
}


def flow(first: Step, second: Step) -> list[dict[str, Any]]:
    """The transitions for doing `first`, then `second`, then executing the payment."""
    undo_first = first == "ledger"  # only a debit has something to give back
    return [
        on(PaymentRequested, "new", _WAITING[first], after=f"start_{first}"),
        on(_RESULT[first], _WAITING[first], _WAITING[second], conditions="passed",
           after=f"start_{second}"),
        on(_RESULT[first], _WAITING[first], "rejected", after="reject"),
        on(_RESULT[second], _WAITING[second], "executing", conditions="passed", after="execute"),
        on(_RESULT[second], _WAITING[second], "reversing" if undo_first else "rejected",
           after="reverse_debit" if undo_first else "reject"),
        on(DebitReversed, "reversing", "rejected", after="reject"),
        on(PaymentExecuted, "executing", "completed", after="complete"),
    ]  # fmt: skip


class PaymentData(BaseModel):
    account: str = ""
    beneficiary: str = ""
    amount: Decimal = Decimal(0)
    reason: str | None = None


class PaymentFlow(Saga[PaymentData], abstract=True):
    """States and steps shared by both orders; subclasses say the order with `flow`."""

    states = [
        "new",
        "debiting",
        "screening",
        "executing",
        "reversing",
        {"name": "completed", "final": True},
        {"name": "rejected", "final": True},
    ]
    correlation = {
        message: "payment_id"
        for message in (
            PaymentRequested,
            AccountDebited,
            BeneficiaryScreened,
            DebitReversed,
            PaymentExecuted,
        )
    }

    def start_ledger(self, ctx: SagaContext, message: Any) -> None:
        if isinstance(message, PaymentRequested):
            self._keep(message)
        ctx.send(
            DebitAccount(
                payment_id=self.correlation_id, account=self.data.account, amount=self.data.amount
            ),
            to="ledger",
        )

    def start_aml(self, ctx: SagaContext, message: Any) -> None:
        if isinstance(message, PaymentRequested):
            self._keep(message)
        ctx.send(
            ScreenBeneficiary(payment_id=self.correlation_id, beneficiary=self.data.beneficiary),
            to="aml",
        )

    def passed(self, ctx: SagaContext, result: AccountDebited | BeneficiaryScreened) -> bool:
        passed = result.ok if isinstance(result, AccountDebited) else result.clear
        if not passed:
            self.data.reason = (
                "insufficient funds"
                if isinstance(result, AccountDebited)
                else "beneficiary failed AML screening"
            )
        return passed

    def execute(self, ctx: SagaContext, _result: object) -> None:
        ctx.send(
            ExecutePayment(
                payment_id=self.correlation_id,
                beneficiary=self.data.beneficiary,
                amount=self.data.amount,
            ),
            to="execution",
        )

    def reverse_debit(self, ctx: SagaContext, _result: object) -> None:
        ctx.send(
            ReverseDebit(
                payment_id=self.correlation_id, account=self.data.account, amount=self.data.amount
            ),
            to="ledger",
        )

    def reject(self, ctx: SagaContext, _cause: object) -> None:
        ctx.publish(PaymentRejected(payment_id=self.correlation_id, reason=self.data.reason or ""))

    def complete(self, ctx: SagaContext, _executed: PaymentExecuted) -> None:
        ctx.publish(PaymentCompleted(payment_id=self.correlation_id))

    def _keep(self, request: PaymentRequested) -> None:
        self.data.account, self.data.beneficiary = request.account, request.beneficiary
        self.data.amount = request.amount


class LedgerFirstPayment(PaymentFlow, name="payments.LedgerFirst"):
    """Debit, then screen, then execute (the seed's original chain)."""

    transitions = flow("ledger", "aml")


class AmlFirstPayment(PaymentFlow, name="payments.AmlFirst"):
    """Screen, then debit, then execute: the seed's "simple change", made here."""

    transitions = flow("aml", "ledger")
