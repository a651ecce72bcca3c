"""sagabox: the command line and the wiring of sagas, outbox and relay into one application."""

__version__ = "0.1.0"
