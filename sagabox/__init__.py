"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
