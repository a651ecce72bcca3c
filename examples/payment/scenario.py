"""Three payments from one account: one goes through, one is to a sanctioned beneficiary (its
debit is reversed), one is more than the balance."""

from __future__ import annotations

from decimal import Decimal
from typing import TextIO

from sqlalchemy import insert

from outbox import Outbox
from sagabox.demo import Scene

from .apps import apps, business
from .messages import PaymentRequested
from .tables import accounts, transfers

__all__ = ["TITLE", "apps", "business", "play", "report"]

TITLE = "payments: ledger debit, AML screening and execution, with the debit reversed on failure"


def play(stage: Scene) -> None:
    with stage.request("the account ACC-1 is opened with 1000") as session:
        session.execute(insert(accounts).values(id="ACC-1", balance=Decimal(1000)))
    for payment_id, beneficiary, amount in [
        ("P-1", "Acme Ltd", Decimal(300)),
        ("P-2", "Shady Holdings", Decimal(200)),
        ("P-3", "Acme Ltd", Decimal(5000)),
    ]:
        with stage.request(f"pay {amount} to {beneficiary}") as session:
            Outbox(session).add(
                PaymentRequested(
                    payment_id=payment_id,
                    account="ACC-1",
                    beneficiary=beneficiary,
                    amount=amount,
                    correlation_id=payment_id,
                ),
            )


def report(stage: Scene, out: TextIO) -> None:
    print("\nThe ledger and the transfers:", file=out)
    for account in stage.rows(accounts):
        print(f"  {account.id} balance {account.balance}", file=out)
    for transfer in stage.rows(transfers):
        print(f"  {transfer.payment_id} paid {transfer.amount} to {transfer.beneficiary}", file=out)
