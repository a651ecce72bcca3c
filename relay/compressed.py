"""What kombu does to a delivery as it builds the message, kept from stopping the worker.

kombu undoes a delivery's `compression` header there, whole and before anything can look at its
size: 50 KB of compressed blanks became 50 MB in the worker's memory, and in the dead letter it
was stored as (a broker's 128 MB message would be gigabytes). `hold` makes a channel's messages
skip that step; `decompress` undoes the compressions the standard library can stop at a length
(kombu's zlib, bz2 and lzma) up to the size limit, and says why when it cannot. A message kombu
marked as failed (`unreadable`) is handed over all the same (`get`; a consumer's decode-error
callback), rather than raised at every try, so the worker dead-letters it as it arrived.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from kombu import Queue
from kombu.message import Message as BrokerMessage
from kombu.serialization import prepare_accept_content

from relay.broker import ACCEPT


class CompressionHeld(Exception):
    """Marks a message whose body kombu left compressed, for `decompress`."""


# Set before kombu's own __init__ runs: kombu decompresses only when the message has no errors.
HELD = (CompressionHeld, CompressionHeld("left compressed for the worker"), None)

# kombu's names (and aliases) for the compressions read here, each to a maker of an object
# with `decompress(data, max_length)` and `eof`.
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    name: make
    for names, make in (
        (("application/x-gzip", "gzip", "zlib"), lambda: zlib.decompressobj()),
        (("application/x-bz2", "bzip2", "bzip"), bz2.BZ2Decompressor),
        (("application/x-lzma", "lzma", "xz"), lzma.LZMADecompressor),
    )
    for name in names
}


def hold(channel: Any) -> None:
    """Make the messages `channel` builds from now on keep a compressed body compressed."""
    channel.Message = _holding(type(channel).Message)


def held(message: BrokerMessage) -> str | None:
    """The compression header of a message `hold` kept compressed (None: not one)."""
    if message.errors and message.errors[0] is HELD:
        return str(message.headers.get("compression"))
    return None


def decompress(body: bytes, compression: str, limit: int) -> bytes | str:
    """`body` undone as `compression` says, if it is at most `limit` bytes then; else why not."""
    header = f"its compression header {compression!r}"
    make = _DECOMPRESSORS.get(compression)
    if make is None:
        return f"{header} names none the worker reads ({', '.join(sorted(_DECOMPRESSORS))})"
    decompressor = make()
    try:
        out: bytes = decompressor.decompress(body, limit + 1)
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
        return f"its body is not what {header} says: {type(exc).__name__}: {str(exc)[:200]}"
    if len(out) > limit:
        return f"decompressed as {header} says, it is over the message size limit of {limit} bytes"
    if not decompressor.eof:
        return f"its body is not what {header} says: the compressed data ends early"
    return out


@functools.cache
def _holding(base: type[BrokerMessage]) -> type[BrokerMessage]:
    """`base` (a transport's message class) with kombu's decompression left out."""

    class Holding(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if _compression(args[0] if args else kwargs.get("payload", kwargs.get("msg"))):
                self.errors = [HELD]
            super().__init__(*args, **kwargs)

    return Holding


def _compression(raw: Any) -> object:
    """The compression header of a raw delivery: py-amqp's message, or a virtual transport's
    payload."""
    if isinstance(raw, dict):
        headers = raw.get("headers")
    else:
        headers = (getattr(raw, "properties", None) or {}).get("application_headers")
    return headers.get("compression") if isinstance(headers, dict) else None


def get(queue: Queue) -> BrokerMessage | None:
    """`queue.get()` without its raise on a message kombu marked as failed (see `unreadable`)."""
    message = queue.channel.basic_get(queue=queue.name, no_ack=False)
    if message is None:
        return None
    to_python = getattr(queue.channel, "message_to_python", None)
    got: BrokerMessage = to_python(message) if to_python else message
    got.accept = prepare_accept_content(ACCEPT)
    return got


def unreadable(message: BrokerMessage) -> str | None:
    """Why kombu could not read `message` (None: it could, or `hold` left it to `decompress`)."""
    if not message.errors or held(message) is not None:
        return None
    error = message.errors[0][1]
    compression = (message.headers or {}).get("compression")
    what = f"its compression header {compression!r}" if compression else "it"
    return f"kombu could not undo {what}: {type(error).__name__}: {str(error)[:200]}"
