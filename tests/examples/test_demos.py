"""Every example's demo plays to the end with simulated time and prints its final states."""

from __future__ import annotations

import io

import pytest

from sagabox.cli import main
from sagabox.demo import run_demo
from sagabox.demo_catalog import EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_demo_plays_to_the_end(name: str) -> None:
    out = io.StringIO()
    assert 0 == run_demo(name, out=out)
    assert "Final states:" in out.getvalue()


def test_an_unknown_example_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "loans"])
    assert "choose from 'loan_request', 'checkout', 'payment', 'order'" in capsys.readouterr().err
