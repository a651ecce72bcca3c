"""What a user installs works: the built wheel, alone in a fresh virtualenv, runs every command.

The development environment has every extra and dev tool, so it cannot show a missing import;
these tests install the wheel the way a user does and run `sagabox` from it as a process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagabox.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        command, capture_output=True, text=True, timeout=600, check=False, **options
    )


def _ok(command: list[str], **options: object) -> str:
    done = _run(command, **options)
    assert 0 == done.returncode, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Install:
    """A fresh virtualenv holding the built wheel and only what it depends on."""

    def __init__(self, folder: Path, wheel: Path) -> None:
        self.folder = folder
        self.wheel = wheel
        self.python = folder / "venv" / "bin" / "python"
        self.work = folder / "work"  # not the checkout: nothing may come from the source tree
        self.work.mkdir()
        # No pip inside: the test's own pip installs into it, which is quicker than a bootstrap.
        _ok([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")])
        self.add("")

    def add(self, extras: str) -> None:
        """Install the wheel with `extras` (e.g. "[demo]") and their dependencies."""
        pip = [sys.executable, "-m", "pip", "--python", str(self.python)]
        _ok([*pip, "install", "--quiet", "--disable-pip-version-check", f"{self.wheel}{extras}"])

    def sagabox(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run the installed `sagabox` script, in a folder outside the checkout."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SAGABOX_")}
        environment.pop("PYTHONPATH", None)
        script = self.python.parent / "sagabox"
        return _run([str(script), *arguments], cwd=self.work, env=environment)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The wheel built from this source, installed with no extra at all."""
    folder = tmp_path_factory.mktemp("install")
    # The sdist first, then the wheel from it (build's default): no stale file of an earlier
    # in-tree build can slip into the wheel, and the sdist is shown to build.
    build = [sys.executable, "-m", "build", "--no-isolation"]
    _ok([*build, "--outdir", str(folder / "dist"), str(ROOT)])
    (wheel,) = (folder / "dist").glob("sagabox-*.whl")
    return Install(folder, wheel)


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[list[str]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, [*path, name])


COMMANDS = list(_commands(build_parser(), []))


def test_every_command_shows_its_help_without_any_extra(installed: Install) -> None:
    """`sagabox --help` runs from a base install, and so does `--help` of every subcommand."""
    done = installed.sagabox("--help")
    assert 0 == done.returncode, done.stderr
    assert "usage: sagabox" in done.stdout
    # One process for the rest: a process each costs seconds apiece and imports nothing more.
    each = (
        "import sys\n"
        "from sagabox.cli import main\n"
        f"for command in {[c for c in COMMANDS if c]!r}:\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (command, exit.code)\n"
        "    else:\n"
        "        raise AssertionError(command)\n"
        "print('every help shown')\n"
    )
    done = _run([str(installed.python), "-c", each], cwd=installed.work)
    assert 0 == done.returncode, done.stderr
    assert done.stdout.count("usage: sagabox") == len(COMMANDS) - 1
    assert "freezegun" not in done.stdout + done.stderr


def test_the_commands_run_on_sqlite_and_the_in_process_broker(installed: Install) -> None:
    """db upgrade/current, relay, worker, dlq, sagas, inbox and graph work from a base install."""
    db = f"sqlite:///{installed.work / 'app.db'}"
    run = installed.sagabox

    def ok(*arguments: str) -> str:
        done = run(*arguments)
        assert 0 == done.returncode, f"sagabox {' '.join(arguments)}:\n{done.stderr}"
        return done.stdout

    assert "sagabox tables at head" in ok("db", "upgrade", "--db", db)
    assert "(head)" in ok("db", "current", "--db", db)
    assert "shipped 0 messages" in ok("relay", "--once", "--db", db, "--broker", "memory://")
    spec = "sagabox.examples.checkout.apps:apps"
    worker = ok("worker", "--once", "--app", spec, "--endpoint", "email", "--db", db)
    assert "processed 0 messages" in worker
    assert "no dead letters" in ok("dlq", "list", "--db", db)
    assert "no saga instances" in ok("sagas", "list", "--db", db)
    assert "nothing stuck" in ok("sagas", "stuck", "--older-than", "1h", "--db", db)
    assert "pruned 0" in ok("inbox", "prune", "--older-than", "7d", "--db", db)
    assert "flowchart" in ok("graph", "--app", "sagabox.examples.order.apps:apps")


def test_what_needs_an_extra_names_its_pip_line(installed: Install) -> None:
    """Without the extras, the demo, PostgreSQL and metrics say which `pip install` to run."""
    demo = installed.sagabox("demo", "order")
    assert 1 == demo.returncode
    assert "pip install 'sagabox[demo]'" in demo.stderr
    postgres = installed.sagabox("db", "current", "--db", "postgresql://u:p@127.0.0.1:9/x")
    assert 1 == postgres.returncode
    assert "pip install 'sagabox[postgres]'" in postgres.stderr
    db = f"sqlite:///{installed.work / 'metrics.db'}"
    assert 0 == installed.sagabox("db", "upgrade", "--db", db).returncode
    metrics = installed.sagabox(
        "relay", "--once", "--db", db, "--broker", "memory://", "--metrics-port", "0"
    )
    assert 1 == metrics.returncode
    assert "pip install 'sagabox[metrics]'" in metrics.stderr
    for done in (demo, postgres, metrics):
        assert "Traceback" not in done.stderr


def test_the_demo_plays_from_the_wheel_with_the_demo_extra(installed: Install) -> None:
    """`pip install 'sagabox[demo]'` is all `sagabox demo` needs: the examples ship inside."""
    installed.add("[demo]")
    done = installed.sagabox("demo", "loan_request")
    assert 0 == done.returncode, done.stderr
    assert "Final states:" in done.stdout
