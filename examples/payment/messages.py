"""Commands to the ledger, AML and execution services, and what they answer."""

from __future__ import annotations

from decimal import Decimal

from outbox import Command, Event


class PaymentRequested(Event, type="payments.PaymentRequested"):
    """The disbursement service asks for a payment."""

    payment_id: str
    account: str
    beneficiary: str
    amount: Decimal


class PaymentCompleted(Event, type="payments.PaymentCompleted"):
    payment_id: str


class PaymentRejected(Event, type="payments.PaymentRejected"):
    payment_id: str
    reason: str


class DebitAccount(Command, type="ledger.DebitAccount"):
    payment_id: str
    account: str
    amount: Decimal


class ReverseDebit(Command, type="ledger.ReverseDebit"):
    """Put back what `DebitAccount` took: the compensation of the ledger step."""

    payment_id: str
    account: str
    amount: Decimal


class AccountDebited(Event, type="ledger.AccountDebited"):
    payment_id: str
    ok: bool


class DebitReversed(Event, type="ledger.DebitReversed"):
    payment_id: str


class ScreenBeneficiary(Command, type="aml.ScreenBeneficiary"):
    payment_id: str
    beneficiary: str


class BeneficiaryScreened(Event, type="aml.BeneficiaryScreened"):
    payment_id: str
    clear: bool


class ExecutePayment(Command, type="execution.ExecutePayment"):
    payment_id: str
    beneficiary: str
    amount: Decimal


class PaymentExecuted(Event, type="execution.PaymentExecuted"):
    payment_id: str
