"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

from __future__ import annotations

__version__ = "0.1.0"

from outbox.handlers import HandlerContext, handles
from relay.worker import RetryPolicy, Unrecoverable
from sagabox.app import App, load_app

__all__ = ["App", "HandlerContext", "RetryPolicy", "Unrecoverable", "handles", "load_app"]
