"""A worker or relay whose `run` returned after a stop can run again, as a bus that was stopped
can be started again (a service pausing its consumers, a test running one twice). Both used to
keep the stop: a second `run` returned at once, and a relay's second run did not listen."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from outbox import Outbox
from relay import Relay
from relay.wakeup import Wakeup
from tests.bank_app import Deposit, Deposited
from tests.relay_helpers import bank_endpoint, consume_until, wait_for
from tests.test_relay import Listener, _listening_backends


@pytest.fixture
def listener(broker_url: str) -> Iterator[Listener]:
    listener = Listener(broker_url, Deposited.type_name, "bank")
    yield listener
    listener.close()


def test_a_stopped_worker_runs_again(database_url: str, amqp_url: str) -> None:
    with bank_endpoint(database_url, amqp_url) as bank:
        for number in (1, 2):
            bank.send(Deposit(account="a", amount=number))
            bank.relay.drain()

            def handled(count: int = number) -> bool:
                return bank.worker.stats.handled == count

            consume_until(bank, handled, f"deposit {number}")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("broker_url", ["memory"], indirect=True)
def test_a_stopped_relay_runs_again_and_listens_again(
    engine: Engine, broker_url: str, listener: Listener
) -> None:
    """The second run ships a commit within seconds of it, with a 60 s poll: it is woken by
    NOTIFY again (written over a bare connection, which no in-process hook sees)."""
    relay = Relay(engine, broker_url, exchange=listener.exchange, poll_interval=60)
    for number in range(2):
        thread = threading.Thread(target=relay.run)
        thread.start()
        try:
            wait_for(lambda: _listening_backends(engine) == 1, what="LISTEN")
            wait_for(relay.idle.is_set, what="the relay to idle")
            with engine.begin() as connection:
                Outbox(connection).add(Deposited(account="a", amount=number))
            wait_for(lambda: len(listener.fetch()) == 1, timeout=10, what=f"event {number}")
        finally:
            relay.stop()
            thread.join(timeout=10)
        assert not thread.is_alive()
    assert 2 == relay.stats.published


class HoldingProxy:
    """A TCP proxy to the database that holds its first connection silent until released, as a
    server that accepts and then stalls does (psycopg's connect gives up only after 130 s)."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.held = threading.Event()
        self.release = threading.Event()
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first = True
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client, first), daemon=True).start()
            first = False

    def _serve(self, client: socket.socket, hold: bool) -> None:
        if hold:
            self.held.set()
            self.release.wait()
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in `accept`
        for sock in self._sockets:
            sock.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_listener_left_behind_by_close_is_not_revived_by_listening_again(
    engine: Engine,
) -> None:
    """A LISTEN thread stuck connecting outlives `close`; listening again must not revive it
    (they shared one closing flag, which the second `listen` cleared): one thread, one LISTEN."""
    assert engine.url.host
    assert engine.url.port
    proxy = HoldingProxy(engine.url.host, engine.url.port)
    # Only the listener connects through it: `listen` takes the engine's URL and dialect.
    proxied = create_engine(engine.url.set(host="127.0.0.1", port=proxy.port))
    wakeup = Wakeup()
    wakeup.close_timeout = 0.1
    try:
        wakeup.listen(proxied)
        assert proxy.held.wait(10), "the first LISTEN connection never reached the proxy"
        stuck = wakeup._listener
        assert stuck is not None
        wakeup.close()
        assert stuck.is_alive()  # left behind, still connecting
        wakeup.listen(proxied)
        wait_for(lambda: _listening_backends(engine) == 1, what="the second run's LISTEN")
        proxy.release.set()  # the stuck connection now completes
        stuck.join(timeout=10)
        assert not stuck.is_alive(), "the listener left behind was revived"
        wait_for(lambda: _listening_backends(engine) == 1, what="one LISTEN connection")
        assert 1 == sum(t.name == "sagabox-listen" for t in threading.enumerate())
    finally:
        wakeup.close_timeout = 5.0  # the second listener takes up to a second to stop
        wakeup.close()
        proxy.close()
        proxied.dispose()
