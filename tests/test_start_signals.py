"""SIGTERM while `sagabox worker`/`sagabox relay` is still importing sagabox: a clean exit 0.

The handlers go in as the `sagabox` package starts to load in the command, before anything else
it imports. The child here is held inside that window by a `sitecustomize` that blocks in the
import of `outbox` (the first thing sagabox looks up) until the test has sent the signal, so
the test does not race the interpreter's start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_TIMEOUT = 60  # seconds: only ever reached when the behaviour under test is broken

# Blocks the first lookup of `outbox` (sagabox's layout check, at the top of the package) until
# a line comes on stdin, and says so on stderr first: the test's event.
HOLD = """
import sys

class Hold:
    held = False

    def find_spec(self, name, path=None, target=None):
        if name == "outbox" and not Hold.held:
            Hold.held = True
            print("held in the import of outbox", file=sys.stderr, flush=True)
            sys.stdin.readline()
        return None

sys.meta_path.insert(0, Hold())
"""

COMMANDS = {
    "relay": ["relay", "--broker", "memory://"],
    "worker": ["worker", "--app", "tests.bank_app:app", "--broker", "memory://"],
}


@pytest.mark.parametrize("how", ["module", "script"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_sigterm_while_sagabox_is_being_imported_exits_0(
    tmp_path: Path, command: str, how: str
) -> None:
    """Sent while the command is still importing sagabox (held there), it exits 0, not -15."""
    (tmp_path / "sitecustomize.py").write_text(HOLD)
    start = (
        [sys.executable, "-m", "sagabox.cli"]
        if how == "module"
        else [str(Path(sys.executable).parent / "sagabox")]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGABOX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    env["SAGABOX_DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.db'}"
    process = subprocess.Popen(
        [*start, *COMMANDS[command]],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stdin is not None
        assert "held in the import of outbox\n" == process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        try:
            process.stdin.write("go on\n")
            process.stdin.close()
        except BrokenPipeError:
            pass  # the signal killed it: the assertion below says how
        assert 0 == process.wait(timeout=_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=_TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


def test_an_application_importing_sagabox_keeps_its_own_handlers() -> None:
    """Only the command installs them: a service that imports sagabox keeps the default."""
    probe = "import signal, sagabox; print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=True,
    )
    assert "True\n" == done.stdout
