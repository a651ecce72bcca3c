"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

from sagabox.layout import check_siblings

# Before importing any of them: a namesake shadowing one is a clear error, not a puzzle later.
check_siblings(Path(__file__).resolve().parent.parent)

# Imported only once the check above has passed, hence below it.
from outbox.handlers import HandlerContext, handles  # noqa: E402
from relay.worker import RetryPolicy, Unrecoverable  # noqa: E402
from sagabox.app import App, load_app  # noqa: E402

__all__ = ["App", "HandlerContext", "RetryPolicy", "Unrecoverable", "handles", "load_app"]
