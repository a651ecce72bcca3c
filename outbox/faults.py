"""`Faulted[Cmd]`: the event a receiver sends back when it dead-letters a command whose sender
watches for its failure, written in the dead letter's own transaction.

Only commands that asked for it (their `sagabox-fault-to` header, set by a saga that declares a
transition for `Faulted[Cmd]`) get one: a plain sender's endpoint receives nothing extra. The
fault carries the command's type, id, the endpoint that gave up and the dead letter's reason
(already masked), never the command's payload.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from outbox import clock
from outbox.database import Executor
from outbox.envelope import (
    H_CAUSATION_ID,
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_OCCURRED_AT,
    H_TYPE,
    H_VERSION,
    Envelope,
)
from outbox.generic_messages import parametrised, type_name_of
from outbox.messages import Event, Message
from outbox.return_address import return_address
from outbox.urls import mask_secrets
from outbox.writer import Outbox

log = logging.getLogger("sagabox.worker")

C = TypeVar("C", bound=Message)

FAULTED = "sagabox.Faulted"
# The fault's id derives from the dead-lettered message's, so a second dead letter of the same
# message (a replay that fails again) is a duplicate the sender's inbox drops.
_FAULT_IDS = uuid.UUID("0b7e6f0e-2d52-4b55-9c1e-3f6a1d2c8e41")
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MAX_REASON = 2_000


class Faulted(Event, Generic[C], abstract=True):
    """A command sent to another endpoint was dead-lettered there: `Faulted[ChargeCard]`.

    Declare `on(Faulted[ChargeCard], "charging", "cancelled")` in a saga: its `send` (or
    `request`) of a `ChargeCard` then asks the receiver for the fault.
    """

    #: The type name of the command that failed.
    message_type: str
    #: Its message id.
    faulted_id: UUID
    #: Why the receiver gave up (its dead letter's reason).
    reason: str
    #: The endpoint that dead-lettered it.
    endpoint: str

    #: The command class this fault is about (set on `Faulted[Cmd]`).
    of: ClassVar[type[Message] | None] = None

    def __class_getitem__(cls, item: Any) -> Any:
        if not (isinstance(item, type) and issubclass(item, Message)):
            return cls  # `X[Any]`, `X[T]` in an annotation: any of them
        if issubclass(item, Event):
            # Events are published, never answered: a transition on their fault never fires.
            raise TypeError(
                f"Faulted[{item.__name__}]: {item.__name__} is an Event, and only commands "
                "fault back to their sender; watch the fault of the command that leads to it"
            )
        return parametrised(cls, FAULTED, item)


def fault_type_name(type_name: str) -> str:
    """The type name of `Faulted[...]` for the message type named `type_name`."""
    return type_name_of(FAULTED, type_name)


def write_fault(
    executor: Executor, *, endpoint: str, headers: Mapping[str, Any] | None, reason: str
) -> bool:
    """Send the fault of a message dead-lettered at `endpoint`, if its sender asked for one.

    Runs in the dead letter's transaction; returns whether a fault was written. Headers that
    do not make a usable return address mean no fault (the dead letter says why it failed).
    """
    if not isinstance(headers, Mapping):
        return False
    address = return_address(headers, "fault")
    if address is None:
        return False
    message_type, message_id = headers.get(H_TYPE), headers.get(H_MESSAGE_ID)
    if not (isinstance(message_type, str) and _TYPE_NAME.match(message_type)):
        log.info("worker: no fault sent for a message without a usable type header")
        return False
    try:
        faulted = UUID(str(message_id))
    except ValueError:
        log.info("worker: no fault sent for a message without a usable message id header")
        return False
    correlation = headers.get(H_CORRELATION_ID)
    correlation = correlation if isinstance(correlation, str) else None
    fault_headers = {
        H_TYPE: fault_type_name(message_type),
        H_VERSION: "1",
        H_MESSAGE_ID: str(uuid.uuid5(_FAULT_IDS, f"{endpoint}/{faulted}")),
        H_OCCURRED_AT: clock.now().isoformat(),
        H_CAUSATION_ID: str(faulted),
        **address.headers_for_answer(faulted),
    }
    if correlation is not None:
        fault_headers[H_CORRELATION_ID] = correlation
    payload = {
        "message_type": message_type,
        "faulted_id": str(faulted),
        "reason": _storable(mask_secrets(reason))[:_MAX_REASON],
        "endpoint": endpoint,
    }
    Outbox(executor).add_envelope(
        Envelope(fault_headers[H_TYPE], 1, json.dumps(payload), fault_headers),
        destination=address.endpoint,
        partition_key=correlation,
    )
    return True


def _storable(text: str) -> str:
    # A reason quotes exceptions, which may quote hostile input: no lone surrogate, no NUL.
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
