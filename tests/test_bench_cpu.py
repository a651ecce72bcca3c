"""The benchmarks' server CPU figures: one server's own processes, ended children included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_a_server_counts_the_children_that_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process stands in for a postmaster: a child that burns CPU and is reaped still
    counts, which summing the running processes by name lost (it read below zero)."""
    pid_file = tmp_path / "postgres" / "data" / "postmaster.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n{tmp_path}\n")
    monkeypatch.setenv("SAGABOX_SERVICES_DIR", str(tmp_path))
    with common.measuring_cpu() as cpu:
        subprocess.run([sys.executable, "-c", BURN], check=True)
    assert cpu.postgresql >= 0.25


def test_without_the_services_folder_it_counts_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGABOX_SERVICES_DIR", raising=False)
    name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert common.server_cpu_seconds(name) == pytest.approx(common.cpu_seconds(name), abs=0.05)
