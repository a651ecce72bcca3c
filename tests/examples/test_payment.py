"""The payment example in both orders: ledger first (a failed screening reverses the debit) and
AML first (a failed screening never touches the ledger)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import insert

from examples.payment.apps import apps, business
from examples.payment.messages import (
    DebitAccount,
    PaymentCompleted,
    PaymentRejected,
    PaymentRequested,
    ReverseDebit,
    ScreenBeneficiary,
)
from examples.payment.saga import AmlFirstPayment, LedgerFirstPayment
from examples.payment.tables import accounts, transfers
from outbox import Message
from sagabox.testing import SagaHarness


@pytest.fixture(params=[False, True], ids=["ledger-first", "aml-first"])
def harness(request: pytest.FixtureRequest, empty_database_url: str) -> Iterator[SagaHarness]:
    system = apps(aml_first=request.param)
    with SagaHarness(*system, database=empty_database_url, business=[business]) as h:
        with h.transaction() as session:
            session.execute(insert(accounts).values(id="ACC-1", balance=Decimal(1000)))
        yield h


def _pay(h: SagaHarness, payment_id: str, beneficiary: str, amount: int) -> None:
    h.dispatch(
        PaymentRequested(
            payment_id=payment_id,
            account="ACC-1",
            beneficiary=beneficiary,
            amount=Decimal(amount),
            correlation_id=payment_id,
        )
    )


def _balance(h: SagaHarness) -> Decimal:
    return Decimal(h.rows(accounts)[0].balance)


def _commands(h: SagaHarness) -> list[str]:
    steps = (DebitAccount, ReverseDebit, ScreenBeneficiary)
    sent: list[Message] = h.sent()
    return [type(command).__name__ for command in sent if isinstance(command, steps)]


def test_a_clean_payment_debits_screens_and_executes(harness: SagaHarness) -> None:
    _pay(harness, "P-1", "Acme Ltd", 300)
    assert ["P-1"] == [e.payment_id for e in harness.published(PaymentCompleted)]
    assert Decimal(700) == _balance(harness)
    assert ["P-1"] == [t.payment_id for t in harness.rows(transfers)]
    aml_first = harness.apps[0].runtime.sagas == [AmlFirstPayment]
    order = ["ScreenBeneficiary", "DebitAccount"]
    assert (order if aml_first else order[::-1]) == _commands(harness)


def test_a_failed_screening_leaves_the_balance_as_it_was(harness: SagaHarness) -> None:
    """Ledger first: debited, then reversed. AML first: never debited."""
    _pay(harness, "P-2", "Shady Holdings", 200)
    assert ["beneficiary failed AML screening"] == [
        e.reason for e in harness.published(PaymentRejected)
    ]
    assert Decimal(1000) == _balance(harness)
    assert [] == harness.rows(transfers)
    if harness.apps[0].runtime.sagas == [LedgerFirstPayment]:
        assert ["DebitAccount", "ScreenBeneficiary", "ReverseDebit"] == _commands(harness)
        assert "rejected" == harness.state(LedgerFirstPayment, "P-2")
    else:
        assert ["ScreenBeneficiary"] == _commands(harness)
        assert "rejected" == harness.state(AmlFirstPayment, "P-2")


def test_insufficient_funds_are_rejected_without_a_transfer(harness: SagaHarness) -> None:
    _pay(harness, "P-3", "Acme Ltd", 5000)
    assert ["insufficient funds"] == [e.reason for e in harness.published(PaymentRejected)]
    assert Decimal(1000) == _balance(harness)
    assert [] == harness.rows(transfers)
