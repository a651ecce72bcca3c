"""Hooks through which the relay and the worker report what they do, for metrics.

The default observer does nothing; `sagabox.metrics` provides one that feeds Prometheus. Calls
happen after the work they describe has committed (or failed), never inside a transaction.
"""

from __future__ import annotations


class Observer:
    """Receives the relay's and the worker's events; override what you need."""

    def relay_batch(self, *, published: int, unroutable: int, seconds: float) -> None:
        """A batch committed: `published` rows shipped, `unroutable` kept for later."""

    def relay_failed(self, error: BaseException) -> None:
        """A batch rolled back."""

    def relay_rows_failed(self, *, retried: int, dead_lettered: int) -> None:
        """A batch committed with rows the broker did not take: kept for later, or given up."""

    def message_processed(
        self, *, endpoint: str, message_type: str, outcome: str, seconds: float
    ) -> None:
        """A worker finished with a message: handled, duplicate, retry_scheduled, dead_lettered."""


#: The observer that observes nothing.
NOOP = Observer()
