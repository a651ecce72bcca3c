"""Named points where a test makes a process fail on purpose, as etcd's failpoints do.

Crash tests run the relay or worker as a subprocess with, for example,
`SAGABOX_FAILPOINTS="relay.after_publish=kill"`: the process kills itself with SIGKILL at that
exact point, which no outside timing can hit reliably. `name=kill@3` acts on the third hit;
`raise` raises `FailpointHit` instead. Unset, a failpoint costs one truth test.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "SAGABOX_FAILPOINTS"
_ACTIONS = ("kill", "raise")


class FailpointHit(RuntimeError):
    """Raised at a failpoint set to `raise`."""


def _parse(spec: str) -> dict[str, tuple[str, int]]:
    points: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        if action not in _ACTIONS or (nth and not nth.isdigit()):
            raise ValueError(
                f"{ENV}: cannot read {item!r}; write name=kill or name=raise, optionally @N"
            )
        points[name] = (action, int(nth or 1))
    return points


_points = _parse(os.environ.get(ENV, ""))
_hits: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Do what $SAGABOX_FAILPOINTS says for `name`, if anything."""
    if not _points or name not in _points:
        return
    action, nth = _points[name]
    _hits[name] += 1
    if _hits[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise FailpointHit(name)


def arm(name: str, action: str = "raise", nth: int = 1) -> None:
    """Set a failpoint from inside a test process (what $SAGABOX_FAILPOINTS does at start)."""
    if action not in _ACTIONS or nth < 1:
        raise ValueError(f"failpoint action must be one of {_ACTIONS} and nth >= 1")
    _points[name] = (action, nth)
    _hits[name] = 0


def disarm() -> None:
    """Clear every failpoint and its hit count."""
    _points.clear()
    _hits.clear()
