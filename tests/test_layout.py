"""A package named like one of sagabox's own (`relay`, `outbox`, `sagas`) is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import relay


@pytest.mark.parametrize("name", ["relay", "outbox", "sagas"])
def test_a_shadowing_package_is_named_with_both_paths(tmp_path: Path, name: str) -> None:
    """A service's own top-level package on sys.path before sagabox's makes `import sagabox`
    fail at once, naming where each one is and what to do."""
    fake = tmp_path / "service" / name
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""The service\'s own package of the same name."""\n')
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "service")}
    done = subprocess.run(
        [sys.executable, "-c", "import sagabox"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 1 == done.returncode
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sagabox.layout.ShadowedPackage:")
    ours = Path(relay.__file__).resolve().parent.parent / name
    assert str(ours) in last
    assert str(fake) in last
    assert "rename" in last


def test_without_a_namesake_sagabox_imports(tmp_path: Path) -> None:
    """The check passes for sagabox as installed here (a checkout or a wheel)."""
    done = subprocess.run(
        [sys.executable, "-c", "import sagabox, relay; print(relay.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
