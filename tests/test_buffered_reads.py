"""A consuming worker reads py-amqp's frames through a buffer (`relay.buffered_reads`): the
same frames in the same order, whatever pieces the socket hands over and wherever a read
times out, in far fewer reads than frames."""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp.transport import TCPTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.buffered_reads import READ_AT_MOST, buffer_reads
from tests.bank_app import Deposit, ledger_counts
from tests.relay_helpers import bank_endpoint, consume_until

FRAME_END = b"\xce"


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


class _Socket:
    """Hands over the stream in the given pieces, timing out before the pieces so marked."""

    def __init__(self, stream: bytes, pieces: list[int], timeouts: set[int]) -> None:
        self.stream, self.pieces, self.timeouts = stream, pieces, timeouts
        self.calls = 0

    timeout: float | None = None
    timeouts_set = 0

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, timeout: float | None) -> None:
        self.timeouts_set += 1  # a system call on a real socket
        self.timeout = timeout

    def recv(self, n: int) -> bytes:
        self.calls += 1
        if self.calls in self.timeouts:
            raise TimeoutError()
        piece = self.pieces[self.calls % len(self.pieces)]
        got, self.stream = self.stream[: min(n, piece)], self.stream[min(n, piece) :]
        return got


def _transport(sock: _Socket, *, buffered: bool) -> Any:
    """A py-amqp TCP transport on `sock`, with `connection`: what py-amqp's connection does
    to read a frame (`blocking_read`, each frame handed back as read)."""
    transport: Any = TCPTransport("127.0.0.1:1")
    transport.sock = sock
    transport._read_buffer = b""
    transport._quick_recv = sock.recv
    connection: Any = SimpleNamespace(transport=transport, on_inbound_frame=lambda frame: frame)
    connection.blocking_read = lambda timeout=None: amqp.Connection.blocking_read(
        connection, timeout
    )
    transport.connection = connection
    if buffered:
        assert buffer_reads(SimpleNamespace(connection=connection))
    return transport


def _frames_read(transport: Any, count: int) -> list[tuple[int, int, bytes]]:
    frames: list[tuple[int, int, bytes]] = []
    while len(frames) < count:
        try:
            kind, channel, payload = transport.connection.blocking_read(0.5)
        except TimeoutError:
            continue  # as a drain_events that timed out is called again
        frames.append((kind, channel, bytes(payload)))
    return frames


_PAYLOADS = st.lists(
    # Payloads bigger than one read, cheaply: their bytes matter less than their length.
    st.binary(max_size=300)
    | st.integers(READ_AT_MOST - 10, READ_AT_MOST + 10).map(lambda size: b"\x07" * size),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    payloads=_PAYLOADS,
    pieces=st.lists(st.integers(1, 3 * READ_AT_MOST), min_size=1, max_size=8),
    timeouts=st.sets(st.integers(1, 60), max_size=10),
)
def test_frames_come_out_as_they_went_in_whatever_the_socket_hands_over(
    payloads: list[bytes], pieces: list[int], timeouts: set[int]
) -> None:
    sent = [(1 + n % 3, n % 5, payload) for n, payload in enumerate(payloads)]
    stream = b"".join(_frame(*frame) for frame in sent)
    transport = _transport(_Socket(stream, pieces, timeouts), buffered=True)
    assert sent == _frames_read(transport, len(sent))


def test_a_stream_of_small_frames_takes_one_read_not_three_a_frame() -> None:
    """And a frame held whole is read without setting the socket's timeout and back."""
    sent = [(3, 1, b"x" * 40)] * 300
    stream = b"".join(_frame(*frame) for frame in sent)
    plain = _transport(_Socket(stream, [len(stream)], set()), buffered=False)
    buffered = _transport(_Socket(stream, [len(stream)], set()), buffered=True)
    assert _frames_read(plain, 300) == _frames_read(buffered, 300) == sent
    assert 900 == plain.sock.calls
    assert buffered.sock.calls <= len(stream) // READ_AT_MOST + 1
    assert 600 == plain.sock.timeouts_set  # set and set back, for every frame
    assert buffered.sock.timeouts_set <= 2 * buffered.sock.calls  # only around a real read
    assert None is buffered.sock.timeout


def test_a_write_under_a_timeout_keeps_it_while_frames_are_held() -> None:
    """Only the read skips the timeout: a publish with `timeout=` writes under
    `having_timeout` too, and lost its timeout while a frame was held (an outside review)."""
    stream = _frame(3, 1, b"x") * 2
    transport = _transport(_Socket(stream, [len(stream)], set()), buffered=True)
    assert 1 == len(_frames_read(transport, 1))  # the second frame is now held whole
    with transport.having_timeout(5.0) as sock:
        assert 5.0 == sock.gettimeout()


def test_only_pyamqps_plain_tcp_transport_is_buffered() -> None:
    assert not buffer_reads(SimpleNamespace(connection=SimpleNamespace()))
    assert not buffer_reads(SimpleNamespace(connection=SimpleNamespace(transport=object())))


@pytest.mark.second_lane
@pytest.mark.usefixtures("frozen_clock")
def test_a_consuming_worker_reads_many_deliveries_at_a_time(
    database_url: str, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not amqp_url.startswith("amqp"):
        pytest.skip("a socket only on RabbitMQ")
    deposits = [Deposit(account="a", amount=n) for n in range(100)]
    with bank_endpoint(database_url, amqp_url, prefetch=200) as bank:
        bank.send(*deposits)
        bank.relay.drain()
        reads = [0]
        original = socket.socket.recv

        def counting(sock: socket.socket, *args: Any) -> Any:
            reads[0] += 1
            return original(sock, *args)

        monkeypatch.setattr(socket.socket, "recv", counting)
        consume_until(bank, lambda: bank.worker.stats.handled >= 100, "100 deposits")
        monkeypatch.undo()
        assert {d.message_id: 1 for d in deposits} == ledger_counts(bank.engine)
        # py-amqp alone reads each delivery's three frames in three reads each (959 here);
        # buffered, a read takes what has arrived: several deliveries, or at worst one, when
        # the worker keeps up with the broker (144 on a loaded machine), never a frame alone.
        assert reads[0] < 3 * len(deposits), reads
