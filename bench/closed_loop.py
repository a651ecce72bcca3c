"""Keep a fixed number of workflows in flight until all have finished: the driver that both
sides of section (m) use (standard library only, as the peer's own interpreter runs it too)."""

from __future__ import annotations

import time
from collections.abc import Callable


def keep_in_flight(
    start: Callable[[int], None],
    finished: Callable[[], int],
    *,
    first: int,
    count: int,
    in_flight: int,
    every: float = 0.005,
    timeout: float = 600.0,
) -> None:
    """Call `start(n)` for n in `first .. first + count - 1`, never more than `in_flight` ahead
    of `finished()` (how many of them are done), and return when all are done."""
    started = 0
    deadline = time.monotonic() + timeout
    while True:
        done = finished()
        if done >= count:
            return
        while started < count and started - done < in_flight:
            start(first + started)
            started += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} workflows finished in {timeout:.0f} s")
        time.sleep(every)  # polls the business table: the same for both sides
