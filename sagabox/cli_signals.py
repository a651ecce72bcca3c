"""Stopping on SIGTERM or SIGINT from the first line of `sagabox`, before any start-up work.

`main` installs the handlers before it imports the rest of sagabox (the half second in which a
signal used to kill the process with -15). Until a daemon says how to stop it, a signal ends the
process at once with exit code 0: nothing is in flight yet. Afterwards it calls the daemon's
`stop`, which finishes or rolls back the work in flight, and `run` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
log = logging.getLogger("sagabox")


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
        name = signal.Signals(signum).name
        if self._stop is None:
            log.info("received %s during start-up, exiting", name)
            raise SystemExit(0)
        log.info("received %s, stopping", name)
        self._stop()


#: The one instance `sagabox.cli.main` installs.
stop_signals = StopSignals()
