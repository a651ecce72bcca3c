"""What the outbox can store: the one message size limit, read by the writer, the worker and
replay alike, and the text a column holds on every backend.

Whatever the outbox accepts can therefore be shipped, handled and replayed: the limit is checked
when a message is written, and a worker refuses only what no writer with the same setting could
have written. Set it once for every process with $SAGABOX_MAX_MESSAGE_BYTES.
"""

from __future__ import annotations

import os

from outbox.errors import MessageTooLarge

MAX_MESSAGE_BYTES_ENV = "SAGABOX_MAX_MESSAGE_BYTES"
#: 1 MiB: far below RabbitMQ's own `max_message_size` (128 MiB), and large for a message.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


def max_message_bytes() -> int:
    """The largest message body, in bytes: $SAGABOX_MAX_MESSAGE_BYTES, or 1 MiB."""
    text = os.environ.get(MAX_MESSAGE_BYTES_ENV)
    if not text:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(
            f"${MAX_MESSAGE_BYTES_ENV} must be a positive number of bytes, e.g. 4194304 for "
            f"4 MiB (got {text!r})"
        )
    return limit


def check_size(payload: str, *, what: str, limit: int | None = None) -> None:
    """Raise `MessageTooLarge` if `payload`, encoded as UTF-8, is over the limit."""
    limit = max_message_bytes() if limit is None else limit
    if len(payload) * 4 <= limit:
        return  # UTF-8 takes at most 4 bytes a character: no need to encode to know
    size = len(payload.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise MessageTooLarge(too_large(what, size, limit))


def too_large(what: str, size: int, limit: int) -> str:
    """The sentence that says a message is too large and what to do about it."""
    return (
        f"{what} is {size} bytes, over the message size limit of {limit} bytes. Send a "
        "reference to the data (a row id, a URL) instead, or raise the limit for every "
        f"writer, relay and worker alike with ${MAX_MESSAGE_BYTES_ENV}=<bytes> (the broker's "
        "own limit, RabbitMQ's max_message_size, must be at least as large)"
    )


def text_problem(value: str, max_length: int) -> str | None:
    """Why a text column of `max_length` characters cannot hold `value` (None: it can).

    PostgreSQL refuses NUL characters and longer values outright where SQLite stores them, so
    a value is refused by name before any write, alike on both.
    """
    if "\x00" in value:
        return "holds a NUL character"
    if len(value) > max_length:
        return f"is {len(value)} characters long"
    return None


def has_lone_surrogate(value: str) -> bool:
    """Whether `value` holds a lone surrogate (Python keeps undecodable bytes as them), which no
    UTF-8 text, driver or JSON column can carry. ASCII text is answered without encoding."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(value: str) -> str:
    """`value` as an error message shows it: quoted, cut to 80 characters, "..." if it was."""
    return repr(value[:80]) + ("..." if len(value) > 80 else "")
