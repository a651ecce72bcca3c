"""`sagabox graph`: the flow as Mermaid, and `--check` on good and bad systems."""

from __future__ import annotations

import pytest

from sagabox.cli import main
from sagabox.demo_catalog import EXAMPLES


def _graph(capsys: pytest.CaptureFixture[str], spec: str, *extra: str) -> tuple[int, str]:
    code = main(["graph", "--app", spec, *extra])
    return code, capsys.readouterr().out


def test_the_flow_is_drawn_from_what_the_code_sends_and_handles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _graph(capsys, "examples.order.apps:apps")
    assert 0 == code
    assert out.startswith("flowchart LR")
    assert "ep_orders -->|payments.ChargePayment| ep_payments" in out  # sent, in the saga
    assert "ep_payments -->|payments.PaymentCharged| ep_orders" in out  # published, a handler
    assert "ep_orders -->|orders.OrderCompleted| ep_loyalty" in out  # choreographed
    assert "ep_orders -.->|orders.ChargeOverdue| ep_orders" in out  # a timeout
    assert "outside((outside)) -->|orders.OrderPlaced| ep_orders" in out


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_passes_the_check(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _graph(capsys, f"examples.{name}.apps:apps", "--check")
    assert (0, "0 errors, 0 smells") == (code, out.strip())


def test_a_cycle_between_handlers_fails_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _graph(capsys, "tests.graph_apps:cyclic", "--check")
    assert 1 == code
    assert "error: cycle: tests.graph_apps.answer_ping → tests.graph_apps.answer_pong" in out


def test_loose_ends_fail_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    """A command sent where no handler takes it, and a handler for what nobody sends."""
    code, out = _graph(capsys, "tests.graph_apps:loose_ends", "--check")
    assert 1 == code
    assert "error: handled by nobody: tests.graph_apps.bill sends graphtest.Bill" in out
    assert (
        "error: sent by nobody: tests.graph_apps.refund (billing) handles graphtest.Refund" in out
    )


def test_a_long_single_consumer_chain_is_a_smell_not_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _graph(capsys, "tests.graph_apps:chained", "--check")
    assert 0 == code
    assert "smell: linear chain: tests.graph_apps.first → tests.graph_apps.second →" in out
    assert "an orchestrating saga would keep it in one place" in out
