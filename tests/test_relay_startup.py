"""`sagabox relay` at start-up: settings that can never work end it at once with one line,
services that are not up yet are waited for, and SIGTERM at any point exits 0."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url

_TIMEOUT = 60  # seconds: only ever reached when the behaviour under test is broken


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sagabox.cli", "relay", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGABOX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def _signals_held() -> Iterator[None]:
    """Spawn with SIGTERM blocked: one sent at once stays pending until the child's handlers
    are in, so the test does not depend on how fast the interpreter itself starts."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class _Lines:
    """The child's stderr, line by line, read on a thread so waiting for a line has a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stderr is not None
        self._stream = process.stderr
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self._lines.put(line)

    def close(self) -> None:
        """Once the process has exited: the stream ends, the reader stops, the pipe closes."""
        self._reader.join(timeout=_TIMEOUT)
        self._stream.close()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + _TIMEOUT
        while True:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            self.seen.append(line)
            if text in line:
                return


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args), capture_output=True, text=True, timeout=_TIMEOUT, env=_env(), check=False
    )


def test_sigterm_the_moment_the_relay_is_spawned_exits_0(database_url: str) -> None:
    """Sent right after the spawn, before sagabox has run a line: it is handled as soon as the
    handlers are in (the first thing `main` does), and the relay exits 0 without starting."""
    with _signals_held():
        process = subprocess.Popen(
            _command("--db", database_url, "--broker", "memory://"),
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
    process.send_signal(signal.SIGTERM)
    try:
        assert 0 == process.wait(timeout=_TIMEOUT)
    finally:
        process.kill()
        process.communicate()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_broker_not_up_yet_is_waited_for_and_sigterm_still_exits_0(database_url: str) -> None:
    """Nothing listens on the broker's port: the relay says so and waits (a broker that comes
    up later is the normal start of a deployment); SIGTERM while it waits exits 0."""
    process = subprocess.Popen(
        _command("--db", database_url, "--broker", "amqp://guest:guest@127.0.0.1:1//"),
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines = _Lines(process)
    try:
        lines.wait_for("is not reachable yet")
        lines.wait_for("is not reachable yet")  # and keeps waiting
        process.send_signal(signal.SIGTERM)
        assert 0 == process.wait(timeout=_TIMEOUT), lines.seen
    finally:
        process.kill()
        process.wait()
        lines.close()


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert 0 != done.returncode
    lines = done.stderr.strip().splitlines()
    assert 1 == len(lines), done.stderr
    return lines[0]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unknown_broker_scheme_stops_the_relay_at_start(database_url: str) -> None:
    line = _one_line(_run(["--db", database_url, "--broker", "amqq://guest:secret@host//"]))
    assert "unknown broker scheme 'amqq'" in line
    assert "amqp://" in line
    assert "secret" not in line


def test_a_broker_that_refuses_the_login_stops_the_relay_at_start(
    database_url: str, amqp_url: str
) -> None:
    broker = amqp_url.replace(":guest@", ":wrong-pw@")
    assert broker != amqp_url
    line = _one_line(_run(["--db", database_url, "--broker", broker]))
    assert "refused the login" in line
    assert "wrong-pw" not in line


def test_a_database_without_sagabox_tables_stops_the_relay_at_start(
    empty_database_url: str,
) -> None:
    line = _one_line(_run(["--db", empty_database_url, "--broker", "memory://"]))
    assert "sagabox db upgrade" in line
    assert "sagabox_outbox_messages" in line


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_database_that_refuses_the_login_stops_the_relay_at_start(database_url: str) -> None:
    url = make_url(database_url).set(password="wrong-pw").render_as_string(hide_password=False)
    line = _one_line(_run(["--db", url, "--broker", "memory://"]))
    assert "password authentication failed" in line
    assert "wrong-pw" not in line
