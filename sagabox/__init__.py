"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

__version__ = "0.1.0"

import logging
from pathlib import Path

from sagabox.layout import check_siblings

# Before importing any of them: a namesake shadowing one is a clear error, not a puzzle later.
check_siblings(Path(__file__).resolve().parent.parent)

# Imported only once the check above has passed, hence below it.
from outbox.handlers import HandlerContext, handles  # noqa: E402
from relay.worker import RetryPolicy, Unrecoverable  # noqa: E402
from sagabox.app import App, load_app  # noqa: E402

# transitions logs two INFO lines per saga transition, drowning a service's own INFO lines (the
# worker logs one per message). Quiet by default; a level set before this import is kept.
if logging.getLogger("transitions").level == logging.NOTSET:
    logging.getLogger("transitions").setLevel(logging.WARNING)

__all__ = ["App", "HandlerContext", "RetryPolicy", "Unrecoverable", "handles", "load_app"]
