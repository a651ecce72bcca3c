"""The relay (outbox → broker) and the consumer worker (broker → handlers).

Builds on `outbox` and knows nothing of sagas: the worker serves any `Endpoint`, and
`sagabox.App` is the endpoint that wires sagas and plain handlers in.
"""

from __future__ import annotations

from relay.broker import ACCEPT, BROKER_ENV, DEFAULT_EXCHANGE, connect, topic_exchange
from relay.daemon import Relay, RelayStats
from relay.preflight import Misconfigured
from relay.publisher import BrokerRefused, ConfirmTimeout, Failure, Outcome, Publisher
from relay.retries import RowRetryPolicy
from relay.worker import Delivery, Endpoint, RetryPolicy, Unrecoverable, Worker, WorkerStats

__all__ = [
    "ACCEPT",
    "BROKER_ENV",
    "DEFAULT_EXCHANGE",
    "BrokerRefused",
    "ConfirmTimeout",
    "Delivery",
    "Endpoint",
    "Failure",
    "Misconfigured",
    "Outcome",
    "Publisher",
    "Relay",
    "RelayStats",
    "RetryPolicy",
    "RowRetryPolicy",
    "Unrecoverable",
    "Worker",
    "WorkerStats",
    "connect",
    "topic_exchange",
]
