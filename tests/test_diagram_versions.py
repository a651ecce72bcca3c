"""A diagram of a saga whose old versions still run marks the transitions kept for them."""

from __future__ import annotations

from examples.order.saga import OrderSaga
from examples.order.saga_v2 import OrderSagaV2


def test_old_version_transitions_are_marked() -> None:
    """v2 of the order saga: its three v1-only transitions say so; the current ones do not."""
    lines = OrderSagaV2.mermaid().splitlines()
    marked = [line.strip() for line in lines if "(old:" in line]
    assert [
        "charging --> allocating: payments.PaymentCharged (old: v1 only)",
        "allocating --> refunding: inventory.OutOfStock (old: v1 only)",
        "refunding --> cancelled: payments.PaymentRefunded (old: v1 only)",
    ] == marked
    assert "    charging --> screening: payments.PaymentCharged" in lines


def test_a_saga_without_old_versions_has_no_marks() -> None:
    """A first version draws as before: no transition is marked old."""
    assert "(old:" not in OrderSaga.mermaid()
