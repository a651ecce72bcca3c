"""The payment endpoints: the orchestrator, the ledger, AML screening and execution."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from outbox import HandlerContext, handles
from sagabox import App

from .messages import (
    AccountDebited,
    BeneficiaryScreened,
    DebitAccount,
    DebitReversed,
    ExecutePayment,
    PaymentExecuted,
    PaymentRequested,
    ReverseDebit,
    ScreenBeneficiary,
)
from .saga import AmlFirstPayment, LedgerFirstPayment
from .tables import accounts, business, transfers

__all__ = ["apps", "business"]

SANCTIONED = frozenset({"Shady Holdings"})


@handles(DebitAccount)
def debit(ctx: HandlerContext, command: DebitAccount) -> None:
    balance = ctx.session.execute(
        select(accounts.c.balance).where(accounts.c.id == command.account)
    ).scalar_one()
    ok = balance >= command.amount
    if ok:
        ctx.session.execute(
            update(accounts)
            .where(accounts.c.id == command.account)
            .values(balance=accounts.c.balance - command.amount)
        )
    ctx.publish(AccountDebited(payment_id=command.payment_id, ok=ok))


@handles(ReverseDebit)
def reverse(ctx: HandlerContext, command: ReverseDebit) -> None:
    ctx.session.execute(
        update(accounts)
        .where(accounts.c.id == command.account)
        .values(balance=accounts.c.balance + command.amount)
    )
    ctx.publish(DebitReversed(payment_id=command.payment_id))


@handles(ScreenBeneficiary)
def screen(ctx: HandlerContext, command: ScreenBeneficiary) -> None:
    clear = command.beneficiary not in SANCTIONED
    ctx.publish(BeneficiaryScreened(payment_id=command.payment_id, clear=clear))


@handles(ExecutePayment)
def execute(ctx: HandlerContext, command: ExecutePayment) -> None:
    ctx.session.execute(
        insert(transfers).values(
            payment_id=command.payment_id, beneficiary=command.beneficiary, amount=command.amount
        )
    )
    ctx.publish(PaymentExecuted(payment_id=command.payment_id))


def apps(*, aml_first: bool = False) -> list[App]:
    """The system with the checks in either order; nothing but the saga class differs."""
    saga = AmlFirstPayment if aml_first else LedgerFirstPayment
    return [
        App("payments", sagas=[saga], inputs=[PaymentRequested]),  # from disbursement
        App("ledger", handlers=[debit, reverse]),
        App("aml", handlers=[screen]),
        App("execution", handlers=[execute]),
    ]
