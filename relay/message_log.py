"""The one log line per handled message, and how message data may appear in any log line.

`worker: message endpoint=… type=… message_id=… correlation_id=… saga=… outcome=… ms=…` at INFO,
in logfmt so both people and log shippers read it; the same fields ride on the record as
`sagabox` for a JSON formatter. Everything taken from a message is escaped: a hostile header
cannot forge a log line or break the log handler's encoding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from outbox.envelope import H_CORRELATION_ID, H_MESSAGE_ID

log = logging.getLogger("sagabox.worker")


def log_outcome(
    *,
    endpoint: str,
    message_type: str,
    headers: Mapping[str, Any],
    saga: str | None,
    outcome: str,
    seconds: float,
) -> None:
    """Log how the worker finished with one message."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {
        "endpoint": endpoint,
        "type": message_type,
        "message_id": headers.get(H_MESSAGE_ID),
        "correlation_id": headers.get(H_CORRELATION_ID),
        "saga": saga,
        "outcome": outcome,
        "ms": round(seconds * 1000, 3),
    }
    log.info(
        "worker: message %s",
        " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items()),
        extra={"sagabox": fields},
    )


def escaped(value: object, limit: int = 500) -> str:
    """Message data as it may appear in a log line: ASCII, escaped, clipped."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:limit])[1:-1]


def _logfmt(value: object) -> str:
    """One `key=value` value: bare if it is plain, else a JSON string (which escapes)."""
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return str(value)
    text = (value if isinstance(value, str) else repr(value))[:200]
    if text and text.isascii() and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text)
