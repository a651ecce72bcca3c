"""Serving an ASGI app with a real uvicorn, and running the relay and workers' loops, in threads."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import uvicorn


class Daemon(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


@contextmanager
def serving(asgi: Any) -> Iterator[str]:
    """Serve `asgi` with uvicorn in a thread; yield its base URL.

    The socket listens before the server starts, so a request made at once waits in the
    backlog until uvicorn (after the app's lifespan startup) accepts it: nothing to wait for.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, lifespan="on", log_level="warning", http="h11", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def running(*daemons: Daemon) -> Iterator[None]:
    """Run the relay and workers' own loops in threads, as `sagabox relay/worker` run them."""
    threads = [threading.Thread(target=daemon.run, daemon=True) for daemon in daemons]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for daemon in daemons:
            daemon.stop()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a daemon did not stop"
