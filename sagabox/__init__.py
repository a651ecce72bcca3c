"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

# First, before the imports below widen the window: in the `sagabox` command, a SIGTERM from
# here on exits 0 instead of killing the process (-15) while it is still starting.
from sagabox.cli_signals import install_in_the_command

install_in_the_command()

import importlib  # noqa: E402  (after the signal handlers, on purpose)
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from sagabox.layout import check_siblings  # noqa: E402

__version__ = "0.1.0"

# Before any of them is imported through sagabox: a namesake shadowing one is a clear error,
# not a puzzle later.
check_siblings(Path(__file__).resolve().parent.parent)

# transitions logs two INFO lines per saga transition, drowning a service's own INFO lines (the
# worker logs one per message). Quiet by default; a level set before this import is kept.
if logging.getLogger("transitions").level == logging.NOTSET:
    logging.getLogger("transitions").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from outbox.handlers import HandlerContext, handles
    from relay.worker import RetryPolicy, Unrecoverable
    from sagabox.app import App, load_app

__all__ = ["App", "HandlerContext", "RetryPolicy", "Unrecoverable", "handles", "load_app"]

# Loaded on first use, so `sagabox` (the command line) can install its signal handlers before
# SQLAlchemy, kombu and pydantic are imported.
_WHERE = {
    "App": "sagabox.app",
    "load_app": "sagabox.app",
    "HandlerContext": "outbox.handlers",
    "handles": "outbox.handlers",
    "RetryPolicy": "relay.worker",
    "Unrecoverable": "relay.worker",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sagabox' has no attribute {name!r}")
