"""Stopping on SIGTERM or SIGINT from the first line of `sagabox`, before any start-up work.

In the `sagabox` command the handlers go in as the `sagabox` package starts to load
(`install_in_the_command`), before it imports anything else; `main` installs them too, for a
caller of `main` in its own process. Until then a signal kills the process with -15. Until a
daemon says how to stop it, a signal ends the process at once with exit code 0: nothing is in
flight yet. Afterwards it calls the daemon's `stop`, which finishes or rolls back the work in
flight, and `run` returns. This module imports only what the handlers need.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: The module `python -m` runs as the command.
COMMAND_MODULE = "sagabox.cli"


class StopSignals:
    """The process's SIGTERM/SIGINT handler: exit during start-up, then a graceful stop."""

    def __init__(self) -> None:
        self._stop: Callable[[], None] | None = None
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place (only the main thread can install them)."""
        return bool(self._previous)

    def install(self) -> None:
        """Handle the signals from now on; a no-op outside the main thread."""
        if threading.current_thread() is not threading.main_thread() or self.installed:
            return
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        # A supervisor may start us with the signals blocked so none is lost during start-up:
        # one that is pending is delivered now, to the handler above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def on_stop(self, stop: Callable[[], None]) -> None:
        """From now on a signal calls `stop` instead of exiting."""
        self._stop = stop

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self._stop = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        import logging  # here: importing it up front would widen the window before `install`

        log = logging.getLogger("sagabox")
        name = signal.Signals(signum).name
        if self._stop is None:
            log.info("received %s during start-up, exiting", name)
            raise SystemExit(0)
        log.info("received %s, stopping", name)
        self._stop()


#: The one instance `sagabox.cli.main` installs.
stop_signals = StopSignals()


def started_as_the_command() -> bool:
    """Whether this process is the `sagabox` command: its script, or `python -m sagabox.cli`
    (while `-m` imports the module's packages, `sys.argv[0]` is "-m" and the module's name is
    in `sys.orig_argv`, just before the arguments)."""
    argv = getattr(sys, "argv", [])
    if argv[:1] == ["-m"]:
        module = sys.orig_argv[len(sys.orig_argv) - len(argv)]
        return module.removeprefix("-m") == COMMAND_MODULE
    return bool(argv) and os.path.basename(argv[0]) == "sagabox"


def install_in_the_command() -> None:
    """Install the handlers if this process is the `sagabox` command; an application that
    imports sagabox keeps its own."""
    if started_as_the_command():
        stop_signals.install()
