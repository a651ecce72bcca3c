"""The ids of saga incarnations and of the messages sagas emit: deterministic, never repeated,
and not computable from public data.

- A saga's incarnation is drawn when it is created, from the id of the message that created it
  (a random uuid4): a re-run of that transition after a crash draws the same one; a new saga
  for a pruned one's correlation id starts from another message and draws another. With a
  per-deployment secret (`SagaRuntime(id_key=...)`) it is a keyed hash (HMAC-SHA256), so even
  a party who saw the starting message cannot compute it.
- An emitted message's id is derived from the incarnation, the transition number, the incoming
  message's id and the message's place in the transition (its index, or a timeout's name and
  how often that name was scheduled in the transition). Re-runs emit the same ids, so inboxes
  drop their duplicates; an id never names two different messages.

Saga type and business key alone (all an outsider knows) give neither, so a forged message
cannot take an id the inbox would later refuse to the real one.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

_INCARNATIONS = uuid.UUID("9a0c1d7e-2b4f-4e8a-b1c3-5d6e7f809a1b")


def incarnation(
    saga_type: str, correlation_id: str, cause: uuid.UUID, key: bytes | None = None
) -> uuid.UUID:
    """The incarnation of the saga `cause` (the starting message's id) creates."""
    name = f"{saga_type}\x00{correlation_id}\x00{cause}"
    if key is None:
        return uuid.uuid5(_INCARNATIONS, name)
    digest = hmac.new(key, name.encode(), hashlib.sha256).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def message_id(incarnation: uuid.UUID, transition: int, cause: uuid.UUID, what: str) -> uuid.UUID:
    """The id of what a saga's transition number `transition` emits when `cause` arrives."""
    return uuid.uuid5(incarnation, f"{transition}/{cause}/{what}")
