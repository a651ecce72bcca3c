"""sagabox's defaults for other libraries' logging: `transitions` speaks at WARNING and up."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest

from sagabox.demo import run_demo


def test_transitions_chatter_is_off_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """A saga run with the root logger at INFO records nothing from `transitions`."""
    caplog.set_level(logging.INFO)
    assert 0 == run_demo("loan_request", out=io.StringIO())
    assert [] == [record for record in caplog.records if record.name.startswith("transitions")]


def test_a_level_set_before_import_is_kept() -> None:
    """Whoever configured `transitions` before importing sagabox keeps that level."""
    program = (
        "import logging\n"
        "logging.getLogger('transitions').setLevel(logging.DEBUG)\n"
        "import sagabox\n"
        "print(logging.getLogger('transitions').level)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert str(logging.DEBUG) == done.stdout.strip()
