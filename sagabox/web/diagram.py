"""A saga's state machine as server-rendered SVG: the path taken, the current state, and what
is still reachable from it, highlighted (no JavaScript, nothing fetched)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from markupsafe import Markup, escape

from sagas.building import reachable_states
from sagas.definition import Saga
from sagas.diagram import edges

_W, _H, _GAP_X, _GAP_Y = 150, 36, 70, 26


def reachable_from(saga: type[Saga[Any]], state: str) -> set[str]:
    """The states an instance in `state` can still get to (itself excluded)."""
    return reachable_states(saga, [state]) - {state}


def _layers(saga: type[Saga[Any]]) -> list[list[str]]:
    """States in columns by their distance from the initial state; unreachable ones last."""
    outgoing: dict[str, list[str]] = defaultdict(list)
    for source, dest, _ in edges(saga):
        if dest not in outgoing[source]:
            outgoing[source].append(dest)
    depth = {saga.initial_state: 0}
    frontier = [saga.initial_state]
    while frontier:
        following: list[str] = []
        for state in frontier:
            for dest in outgoing[state]:
                if dest not in depth:
                    depth[dest] = depth[state] + 1
                    following.append(dest)
        frontier = following
    last = max(depth.values(), default=0) + 1
    for name in saga.state_names:
        depth.setdefault(name, last)
    columns: dict[int, list[str]] = defaultdict(list)
    for name in saga.state_names:
        columns[depth[name]].append(name)
    return [columns[key] for key in sorted(columns)]


def svg(saga: type[Saga[Any]], path: Sequence[str], current: str) -> Markup:
    """The diagram; classes `visited`, `current`, `reachable` and `other` style the states."""
    layers = _layers(saga)
    position: dict[str, tuple[int, int]] = {}
    for column, names in enumerate(layers):
        for row, name in enumerate(names):
            position[name] = (20 + column * (_W + _GAP_X), 20 + row * (_H + _GAP_Y))
    width = 40 + len(layers) * (_W + _GAP_X) - _GAP_X
    height = 40 + max(len(names) for names in layers) * (_H + _GAP_Y) - _GAP_Y
    visited, ahead = set(path), reachable_from(saga, current)
    taken = set(pairwise(path))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="machine" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    drawn: set[tuple[str, str]] = set()
    labels: dict[tuple[str, str], list[str]] = defaultdict(list)
    for source, dest, trigger in edges(saga):
        labels[(source, dest)].append(trigger)
    for (source, dest), triggers in labels.items():
        if (source, dest) in drawn or source == dest:
            continue
        drawn.add((source, dest))
        (x1, y1), (x2, y2) = position[source], position[dest]
        start = (x1 + _W, y1 + _H // 2) if x2 > x1 else (x1, y1 + _H // 2)
        end = (x2, y2 + _H // 2) if x2 > x1 else (x2 + _W, y2 + _H // 2)
        if x1 == x2:
            start, end = (x1 + _W // 2, y1 + _H), (x2 + _W // 2, y2)
        css = "edge taken" if (source, dest) in taken else "edge"
        parts.append(
            f'<line class="{css}" x1="{start[0]}" y1="{start[1]}" x2="{end[0]}" y2="{end[1]}" '
            f'marker-end="url(#arrow)"><title>{escape(", ".join(triggers))}</title></line>'
        )
    for name, (x, y) in position.items():
        if name == current:
            css = "current"
        elif name in visited:
            css = "visited"
        elif name in ahead:
            css = "reachable"
        else:
            css = "other"
        final = " final" if name in saga.final_states else ""
        parts.append(
            f'<g class="state {css}{final}" data-state="{escape(name)}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="8"/>'
            f'<text x="{x + _W // 2}" y="{y + _H // 2 + 5}" text-anchor="middle">'
            f"{escape(name)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every piece of text in it was escaped above
