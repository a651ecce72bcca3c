"""`sagabox graph`: the message flow of a system — who sends, publishes and handles what.

What sagas and handlers emit is read from their source: calls like `ctx.send(Cmd(...), to="x")`,
`ctx.request(Cmd(...), to="x")`, `ctx.reply(Msg(...))` (back to the sagas taking `Msg`),
`ctx.publish(Evt(...))`, `ctx.schedule("n", Timeout(...))` and `Outbox(s).add(Msg(...))`, with
the message class looked up in the defining module; a saga handling `Faulted[Cmd]` gets a fault
edge from the endpoints that take `Cmd`. `check` then reports what a reviewer would
ask about: cycles between handlers, commands nobody handles, handlers for messages nobody sends,
and long chains of events with one consumer each (the smell that asks for an orchestrator).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from outbox.faults import Faulted
from outbox.messages import Event, Message
from sagabox.app import App
from sagas.definition import Saga
from sagas.timeouts import Timeout

Kind = str  # "send" | "publish" | "schedule" | "reply"


@dataclass(frozen=True)
class Emit:
    """A component emits a message: sent to an endpoint, published, or scheduled for itself."""

    endpoint: str
    component: str
    message: str
    kind: Kind
    destination: str | None


@dataclass(frozen=True)
class Handle:
    endpoint: str
    component: str
    message: str
    is_saga: bool


@dataclass
class Flow:
    """Everything `graph` knows about a system of endpoints."""

    emits: list[Emit] = field(default_factory=list)
    handles: list[Handle] = field(default_factory=list)
    inputs: set[str] = field(default_factory=set)
    timeout_types: set[str] = field(default_factory=set)
    #: (saga's endpoint, fault type name, type name of the command it is about).
    faults: set[tuple[str, str, str]] = field(default_factory=set)
    #: What the sagas' own `check()` finds that no message can fix (a compensation never sent).
    broken: list[Problem] = field(default_factory=list)

    def handlers_of(self, message: str) -> list[Handle]:
        return [h for h in self.handles if h.message == message]


@dataclass(frozen=True)
class Problem:
    """One thing `check` found; smells are reported but do not fail the check."""

    kind: str
    detail: str
    smell: bool = False

    def __str__(self) -> str:
        return f"{'smell' if self.smell else 'error'}: {self.kind}: {self.detail}"


def build(apps: Iterable[App]) -> Flow:
    """Read the flow of `apps`: their handlers, their sagas, and what each of them emits."""
    flow = Flow()
    for app in apps:
        flow.inputs.update(message.type_name for message in app.inputs)
        for saga in app.runtime.sagas:
            component = saga.saga_type
            for name, message_type in saga.message_types.items():
                flow.handles.append(Handle(app.name, component, name, True))
                if issubclass(message_type, Timeout):
                    flow.timeout_types.add(name)
                if issubclass(message_type, Faulted) and message_type.of is not None:
                    flow.faults.add((app.name, name, message_type.of.type_name))
            # Actions may live in an abstract base saga: read every class up to Saga itself.
            for cls in saga.__mro__:
                if cls is not Saga and isinstance(cls, type) and issubclass(cls, Saga):
                    flow.emits.extend(_emits(cls, app.name, component))
            flow.emits.extend(_compensations(saga, app.name, flow.emits))
            flow.broken.extend(
                Problem(finding.kind, f"{component}: {finding.detail}")
                for finding in saga.check()
                if finding.kind == "compensation never sent"
            )
        for message, name, handler in app.handlers:
            flow.emits.extend(_emits(handler, app.name, name))
            flow.handles.append(Handle(app.name, name, message, False))
    flow.emits = list(dict.fromkeys(flow.emits))
    flow.handles = list(dict.fromkeys(flow.handles))
    return flow


def _compensations(saga: type[Saga[Any]], endpoint: str, emits: list[Emit]) -> list[Emit]:
    """The compensating commands a saga's declared steps send (the runtime sends them, so
    no action's code names them), to where the step's command goes."""
    found = []
    for declared in saga.steps:
        destinations = (
            {declared.to}
            if declared.to
            else {
                e.destination
                for e in emits
                if e.component == saga.saga_type and e.message == declared.command.type_name
            }
        )
        for destination in destinations or {None}:
            found.append(
                Emit(endpoint, saga.saga_type, declared.compensate.type_name, "send", destination)
            )
    return found


def _emits(code: Any, endpoint: str, component: str) -> list[Emit]:
    try:
        source = textwrap.dedent(inspect.getsource(code))
    except (OSError, TypeError):
        return []
    module = sys.modules.get(code.__module__)
    names = vars(module) if module is not None else {}
    found: list[Emit] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        if method not in ("send", "request", "reply", "publish", "schedule", "add"):
            continue
        arguments = node.args[1:2] if method == "schedule" else node.args[:1]
        for argument in arguments:
            message = _message_class(argument, names)
            if message is None:
                continue
            destination = _keyword(node, "to") or _keyword(node, "destination")
            if method == "schedule":
                kind: Kind = "schedule"
            elif method == "reply":
                kind = "reply"
            elif issubclass(message, Event) and destination is None:
                kind = "publish"
            else:
                kind = "send"
            found.append(Emit(endpoint, component, message.type_name, kind, destination))
    return found


def _message_class(node: ast.expr, names: dict[str, Any]) -> type[Message] | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        candidate = names.get(node.func.id)
        if isinstance(candidate, type) and issubclass(candidate, Message) and candidate.type_name:
            return candidate
    return None


def _keyword(call: ast.Call, name: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def mermaid(flow: Flow) -> str:
    """The flow as a Mermaid flowchart: endpoints as boxes, messages on the arrows."""
    lines = ["flowchart LR"]
    endpoints = sorted({h.endpoint for h in flow.handles} | {e.endpoint for e in flow.emits})
    lines.extend(f"    {_id(name)}[{name}]" for name in endpoints)
    arrows: set[str] = set()
    for emit in flow.emits:
        if emit.kind == "schedule":
            arrows.add(f"    {_id(emit.endpoint)} -.->|{emit.message}| {_id(emit.endpoint)}")
            continue
        receivers = _receivers(flow, emit)
        for receiver in receivers or ["nobody"]:
            target = _id(receiver) if receiver != "nobody" else "nobody((nobody))"
            arrows.add(f"    {_id(emit.endpoint)} -->|{emit.message}| {target}")
    for endpoint, fault, command in flow.faults:
        for handle in flow.handlers_of(command):
            arrows.add(f"    {_id(handle.endpoint)} -.->|{fault}| {_id(endpoint)}")
    for message in sorted(flow.inputs):
        for handle in flow.handlers_of(message):
            arrows.add(f"    outside((outside)) -->|{message}| {_id(handle.endpoint)}")
    return "\n".join([*lines, *sorted(arrows)]) + "\n"


def _receivers(flow: Flow, emit: Emit) -> list[str]:
    handlers = {h.endpoint for h in flow.handlers_of(emit.message)}
    if emit.kind == "send":
        return [emit.destination] if emit.destination in handlers else []
    if emit.kind == "reply":  # back to whoever asked: the sagas taking the answer
        return sorted({h.endpoint for h in flow.handlers_of(emit.message) if h.is_saga})
    return sorted(handlers)


def _id(name: str) -> str:
    return "ep_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def check(flow: Flow) -> list[Problem]:
    """What is wrong (errors) or suspicious (smells) in the flow."""
    problems: list[Problem] = []
    sent = {e.message for e in flow.emits}
    for emit in flow.emits:
        if emit.kind == "send" and not _receivers(flow, emit):
            where = f"endpoint {emit.destination!r}" if emit.destination else "an endpoint"
            problems.append(
                Problem(
                    "handled by nobody",
                    f"{emit.component} sends {emit.message} to {where}, where no saga or "
                    "handler takes it",
                )
            )
    timeouts = {name for name in {h.message for h in flow.handles} if _is_timeout(name, flow)}
    faults = {fault for _, fault, _ in flow.faults}  # sent by the receivers' dead letters
    for handle in flow.handles:
        if handle.message not in sent | flow.inputs | timeouts | faults:
            problems.append(
                Problem(
                    "sent by nobody",
                    f"{handle.component} ({handle.endpoint}) handles {handle.message}, which "
                    "nothing in this system sends; add it to the App's inputs= if it comes "
                    "from outside",
                )
            )
    problems.extend(flow.broken)
    problems.extend(_cycles(flow))
    problems.extend(_chains(flow))
    return list(dict.fromkeys(problems))


def _is_timeout(type_name: str, flow: Flow) -> bool:
    """Timeouts come from `schedule`, which may pass a variable: their sender is the saga."""
    return type_name in flow.timeout_types


def _handler_graph(flow: Flow) -> dict[str, set[str]]:
    """Plain handler → the plain handlers of what it emits (sagas break cycles on purpose)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for emit in flow.emits:
        if emit.kind == "schedule":
            continue
        for handle in flow.handlers_of(emit.message):
            if not handle.is_saga and not _is_saga(flow, emit.component):
                graph[emit.component].add(handle.component)
    return graph


def _is_saga(flow: Flow, component: str) -> bool:
    return any(h.is_saga and h.component == component for h in flow.handles)


def _cycles(flow: Flow) -> list[Problem]:
    graph = _handler_graph(flow)
    problems: list[Problem] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for successor in sorted(graph.get(node, ())):
            if successor in path:
                cycle = path[path.index(successor) :]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    problems.append(
                        Problem("cycle", " → ".join([*cycle, successor]) + ": handlers answer "
                                "each other, possibly forever")
                    )  # fmt: skip
            else:
                visit(successor, [*path, successor])

    for start in sorted(graph):
        visit(start, [start])
    return problems


def _chains(flow: Flow, longest: int = 3) -> list[Problem]:
    """Events with one plain consumer each, feeding each other `longest` or more times."""
    next_hop: dict[str, str] = {}
    for emit in flow.emits:
        if emit.kind != "publish" or _is_saga(flow, emit.component):
            continue
        consumers = flow.handlers_of(emit.message)
        if len(consumers) == 1 and not consumers[0].is_saga:
            next_hop[emit.component] = consumers[0].component
    problems: list[Problem] = []
    starts = set(next_hop) - set(next_hop.values())
    for start in sorted(starts):
        chain = [start]
        while chain[-1] in next_hop and next_hop[chain[-1]] not in chain:
            chain.append(next_hop[chain[-1]])
        if len(chain) > longest:
            problems.append(
                Problem(
                    "linear chain",
                    " → ".join(chain) + ": a workflow spread over single-consumer events; an "
                    "orchestrating saga would keep it in one place",
                    smell=True,
                )
            )
    return problems
