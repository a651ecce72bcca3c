"""Fewer socket writes for many AMQP messages: the frames py-amqp writes, sent in large chunks.

py-amqp sends each message (its method, header and body frames) with one `sendall`. A relay
publishes a batch of hundreds before it waits for the confirms, and on a machine where the
broker runs beside it (loopback) each write costs the sender the receiving side's TCP work as
well, and the broker a read and a wake-up: per 10,000 messages of 300 bytes about 0.2 s of the
relay's CPU and 0.3-0.5 s of RabbitMQ's (bench (c), `bench/results/2026-12-02-relay-cpu.md`).
Inside `coalesced_writes` the frames gather in a buffer and leave when it holds `WRITE_AT`
bytes and when the block ends: the same bytes in the same order, in few writes. The caller
ends the block before waiting for the broker, which has seen nothing of the frames still held.

Nothing is read inside the block. py-amqp polls the socket before each publish (for the
broker's `connection.blocked`); had a poll read the broker's close of a channel over one
message (PRECONDITION_FAILED, say bigger than `max_message_size`), py-amqp would answer it and
reopen the channel in frames still gathered, then wait for the reopening for ever. Unpolled,
the close is read after the block, while the caller awaits its confirms; a read that does wait
sends what is gathered first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu import Connection

#: Gathered frames go to the socket once they are this many bytes. Small enough that the broker
#: starts on a batch early: it has seen nothing of the frames still gathered, and with 256 KiB
#: it waited for most of a batch of 500 messages to be prepared (about 10 ms of the relay's CPU)
#: before its first read; 16 KiB (some 40 messages of 300 bytes) keeps nearly all of the saving
#: in writes (bench (c), `bench/results/2026-12-03-session12.md`).
WRITE_AT = 16 * 1024


@contextlib.contextmanager
def coalesced_writes(connection: Connection) -> Iterator[None]:
    """Within the block, gather what `connection` writes and send it in chunks; a no-op for
    transports other than py-amqp's (kombu's in-process and virtual ones).

    On an exception the gathered frames are dropped, not sent: the block's messages are then
    unconfirmed, and the caller discards the connection as after any failed publish.
    """
    # py-amqp's frame writer sends every frame through its transport's `_write` (the socket's
    # `sendall`, or the TLS socket's writer), looked up at each call, so it can be stood in for.
    transport: Any = getattr(connection.connection, "transport", None)
    original = getattr(transport, "_write", None)
    if original is None:
        yield
        return
    pending = bytearray()
    read_frame = transport.read_frame

    def read(*args: Any) -> Any:
        # A poll is a read with a timeout of 0 (py-amqp's `having_timeout(0)`): it finds nothing.
        if transport.sock.gettimeout() == 0:
            raise TimeoutError()  # socket.timeout, which py-amqp's poll expects
        send()
        transport._write = gather
        return read_frame(*args)

    def send() -> None:
        # Through the transport's own `write`, which marks the connection lost on a socket error.
        transport._write = original
        try:
            if pending:
                transport.write(bytes(pending))
        finally:
            pending.clear()

    def gather(data: Any) -> None:
        pending.extend(data)  # a copy: py-amqp reuses the buffer it hands over
        if len(pending) >= WRITE_AT:
            send()
            transport._write = gather

    transport._write = gather
    transport.read_frame = read
    try:
        yield
    except BaseException:
        transport._write = original
        raise
    finally:
        del transport.read_frame  # the class's own again
    send()
