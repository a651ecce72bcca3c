"""Connecting to the broker with kombu: JSON only, one durable topic exchange, masked URLs."""

from __future__ import annotations

from typing import Any

import amqp.exceptions
import kombu.exceptions
from kombu import Connection, Exchange

from outbox.envelope import CONTENT_TYPE
from outbox.urls import mask_secrets
from relay import amqp_properties

#: The only content type sagabox consumers decode; kombu refuses the rest (pickle above all).
ACCEPT = [CONTENT_TYPE]
#: Every message goes through one topic exchange; its routing key is the outbox row's
#: destination: an endpoint's name for commands, the type name for events.
DEFAULT_EXCHANGE = "sagabox"
BROKER_ENV = "SAGABOX_BROKER_URL"


#: Seconds between AMQP heartbeats on a consumer's connection: a dead peer (a broker behind a
#: cut network, say) is noticed within two of them, not at TCP's timeout many minutes later.
HEARTBEAT_SECONDS = 10.0


def connect(url: str, *, connect_timeout: float = 10.0, heartbeat: float = 0.0) -> Connection:
    """A kombu connection to `url` (amqp://, redis://, memory://), not yet opened.

    With `heartbeat` (seconds; 0 for none) the caller must call `heartbeat_check()` on it at
    least every `heartbeat / 2` seconds, or the broker closes it as dead.
    """
    options: dict[str, Any] = {}
    if url.startswith("memory://"):
        # The in-process broker is polled; kombu's default of 1 s would make every hop slow.
        options["polling_interval"] = 0.01
    connection = Connection(
        url, connect_timeout=connect_timeout, transport_options=options, heartbeat=heartbeat
    )
    if connection.transport.driver_type == "amqp":
        amqp_properties.install()
    return connection


def topic_exchange(name: str = DEFAULT_EXCHANGE) -> Exchange:
    """The durable topic exchange sagabox publishes to and binds endpoint queues on."""
    return Exchange(name, type="topic", durable=True)


def describe(url: str) -> str:
    """The broker URL as it may appear in logs: without its password."""
    return mask_secrets(url)


def uses_confirms(connection: Connection) -> bool:
    """Whether the transport has publisher confirms (RabbitMQ through py-amqp).

    The others (memory, Redis) have taken the message once the publish call returns.
    """
    return bool(connection.transport.driver_type == "amqp")


def broker_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the broker connection is gone": reconnect and try again."""
    return (
        *connection.connection_errors,
        *connection.channel_errors,
        kombu.exceptions.OperationalError,  # what kombu raises when connecting fails
        OSError,
    )


#: Errors that mean "these credentials or this virtual host will never work": login refused
# (403), no such vhost or no access to it (530 NOT_ALLOWED).
REFUSED: tuple[type[BaseException], ...] = (
    amqp.exceptions.AccessRefused,
    amqp.exceptions.NotAllowed,
)
