"""Fewer socket reads for a consumer's deliveries: py-amqp's frames cut from a large buffer.

py-amqp reads exactly the bytes it needs next (a frame's header, its payload, its end octet),
one `recv` each: nine for one delivery's three frames, each two system calls on a socket with a
timeout. A consuming worker spent about a tenth of its CPU there (bench (b),
`bench/results/2026-12-03-session11.md`). `buffer_reads` has a py-amqp TCP transport read what
the socket holds, up to `READ_AT_MOST` bytes, and hand out the next frames from it: the same
bytes in the same order, read ahead. A frame it holds whole is also read without py-amqp
setting the socket's timeout and back (two more system calls a frame).

py-amqp's own reader keeps what it read before a timeout in the transport's `_read_buffer`,
and its frame reader puts a frame's first parts back in front of it; this reader keeps the
same buffer, so both hold.
"""

from __future__ import annotations

import errno
from typing import Any

from amqp.transport import TCPTransport
from kombu import Connection

__all__ = ["READ_AT_MOST", "buffer_reads"]

#: The most one `recv` asks for (a frame bigger than this is read in as many as it needs).
READ_AT_MOST = 64 * 1024

_RETRY = (errno.EAGAIN, errno.EINTR)


def buffer_reads(connection: Connection) -> bool:
    """Read the frames of `connection` (connected) through a buffer; False, and nothing
    changed, for any transport but py-amqp's plain TCP one (TLS has its own reads; kombu's
    in-process transports have no socket)."""
    transport: Any = getattr(connection.connection, "transport", None)
    if type(transport) is not TCPTransport:
        return False
    # Where the unread bytes begin in `_read_buffer`: cutting a frame from a large buffer
    # moves an index, not the rest of the buffer.
    start = 0

    def read(n: int, initial: bool = False) -> bytes:
        nonlocal start
        held: bytes = transport._read_buffer
        end = start + n
        if len(held) >= end:
            start = end
            return held[end - n : end]
        # Not enough held: keep the unread rest, read what the socket has. On any exception the
        # buffer holds exactly the unread bytes from its start, as py-amqp's reader leaves it.
        # Pieces joined once (a frame arriving in many small pieces costs no more than one).
        pieces, have, start = [held[start:]], len(held) - start, 0
        recv = transport.sock.recv
        try:
            while have < n:
                try:
                    got = recv(max(n - have, READ_AT_MOST))
                except OSError as exc:
                    if exc.errno in _RETRY:
                        if initial and transport.raise_on_initial_eintr:
                            raise TimeoutError() from exc  # socket.timeout, as py-amqp raises
                        continue
                    raise
                if not got:
                    raise OSError("Server unexpectedly closed connection")
                pieces.append(got)
                have += len(got)
        except BaseException:
            transport._read_buffer = b"".join(pieces)
            raise
        held = transport._read_buffer = b"".join(pieces)
        start = n
        return held[:n]

    def whole_frame_held() -> bool:
        held: bytes = transport._read_buffer
        if len(held) - start < 7:
            return False
        size = int.from_bytes(held[start + 3 : start + 7], "big")
        return len(held) - start >= size + 8

    amqp_connection: Any = connection.connection

    def blocking_read(timeout: float | None = None) -> Any:
        # py-amqp's own, but for a frame held whole: it sets the socket's timeout for every
        # frame it reads, and sets it back after, two system calls a frame, most of a read
        # from the buffer's cost. A frame held whole is read without the socket. (Only here,
        # where nothing but this read runs: a write under `having_timeout` keeps its timeout.)
        if whole_frame_held():
            frame = transport.read_frame()
        else:
            with transport.having_timeout(timeout):
                frame = transport.read_frame()
        return amqp_connection.on_inbound_frame(frame)

    transport._read = read
    amqp_connection.blocking_read = blocking_read
    return True
