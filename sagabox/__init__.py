"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagabox.layout import check_siblings

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
