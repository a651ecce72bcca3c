"""Saga definitions that change while instances are in flight: versions, old paths, maps, plans.

A saga class declares `version` (default 1). Each instance stores the version whose path it
follows and the version its data was written under. On load, the data is upcast to the current
shape (`Saga.data_upcaster`), renamed and removed states are mapped (`renamed`, `removed`), and
the saga's policy (`on_old_version`) decides whether the instance keeps following its old path
(the transitions marked `on(..., versions=(1,))`) or moves to the current one. `plan` is that
decision as a pure function, shared by loading and by `sagabox sagas migrate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from outbox.sync_only import is_coroutine_callable
from sagas import ledger
from sagas.errors import SagaDefinitionError

if TYPE_CHECKING:
    from sagas.context import SagaContext
    from sagas.definition import Saga

#: `removed = {"refunding": OLD_PATH}`: the state is gone from the current design, but
#: instances already in it finish on the path they started (its marked transitions are kept).
OLD_PATH = "finish_old_path"

#: How an instance started under an older version goes on: on the path it started
#: ("finish_old_path"), or moved to the current path once it is in one of `migrate_at`.
OldVersionPolicy = Literal["finish_old_path", "migrate_at"]

#: `migrate_at = EVERYWHERE`: every old instance moves to the current path when next loaded.
EVERYWHERE = "*"

#: The journal's trigger for a version change (the instance's first save after it).
MIGRATE_TRIGGER = "sagabox.migrate"

DataUpcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Gate:
    """A transition's first condition: whether an instance's definition version may take it.

    A transition marked `versions=(1,)` is taken only by v1 instances; an unmarked one by every
    instance except those whose version has its own marked transition for that trigger and state.
    """

    def __init__(
        self, versions: frozenset[int] | None, excluded: Mapping[str, frozenset[int]]
    ) -> None:
        self.versions = versions
        self.excluded = dict(excluded)

    def admits(self, saga: Saga[Any]) -> bool:
        version = saga.definition_version
        if self.versions is not None:
            return version in self.versions
        return version not in self.excluded.get(saga.state_name, frozenset())

    def __call__(self, ctx: SagaContext, _message: object) -> bool:
        return self.admits(ctx.saga)


def admits(transition: Any, saga: Saga[Any]) -> bool:
    """Whether `saga`'s definition version may take this `transitions` Transition."""
    for condition in transition.conditions:
        if isinstance(condition.func, Gate):
            return condition.func.admits(saga)
    return True


def prepare(
    cls: type[Saga[Any]], declared: list[Any], transitions: Iterable[Mapping[str, Any]]
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Check `cls`'s evolution declarations; return the machine's states (with the states
    kept for old instances) and the transition specs with their version gates."""
    version = getattr(cls, "version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SagaDefinitionError(f"{cls.__name__}.version must be an integer >= 1")
    cls.current_version = version
    cls.data_upcasters = dict(getattr(cls, "data_upcasters", {}))
    names = {_name(s) for s in declared}
    legacy = {old for old, new in cls.removed.items() if new == OLD_PATH}
    for old, new in [*cls.renamed.items(), *cls.removed.items()]:
        # A mapped state still declared would move the current version's own instances too.
        if (old in names and new != OLD_PATH) or (old in cls.renamed and old in cls.removed):
            raise SagaDefinitionError(
                f"{cls.__name__}: {old!r} is still declared in `states` or is in both `renamed` "
                "and `removed`: map each old state once, and only states the class dropped"
            )
        if new != OLD_PATH and new not in names:
            raise SagaDefinitionError(
                f"{cls.__name__}: {old!r} is mapped to {new!r}, which is not declared in `states`"
            )
    if cls.on_old_version not in ("finish_old_path", "migrate_at"):
        raise SagaDefinitionError(
            f"{cls.__name__}.on_old_version must be 'finish_old_path' or 'migrate_at'"
        )
    points = set(cls.migrate_at)
    if cls.on_old_version == "migrate_at":
        if not points:
            raise SagaDefinitionError(
                f"{cls.__name__}: on_old_version = 'migrate_at' needs `migrate_at`, the states "
                f"where old instances move to the current path (or {EVERYWHERE!r})"
            )
        unknown = sorted(points - names - {EVERYWHERE})
        if unknown:
            raise SagaDefinitionError(f"{cls.__name__}.migrate_at names undeclared {unknown}")
    states = list(declared)
    if isinstance(cls.states, type):
        missing = sorted(legacy - names)
        if missing:
            raise SagaDefinitionError(
                f"{cls.__name__}: keep {missing} as members of {cls.states.__name__}, since old "
                "instances finish on the old path through them"
            )
    else:
        states.extend(sorted(legacy - names))
    cls.legacy_states = frozenset(legacy)

    all_states = [_name(s) for s in states]
    marked: dict[tuple[str, str], set[int]] = {}
    entries = []
    for transition in transitions:
        versions = transition.get("versions")
        trigger = transition["trigger"]
        sources = _sources(transition.get("source"), all_states)
        if versions is not None:
            chosen = frozenset(versions)
            if not chosen or any(not isinstance(v, int) or not 1 <= v < version for v in chosen):
                raise SagaDefinitionError(
                    f"{cls.__name__}: versions={tuple(versions)!r} on the transition for "
                    f"{trigger} must name older versions of this saga (1 to {version - 1})"
                )
            for source in sources:
                marked.setdefault((trigger, source), set()).update(chosen)
        else:
            touched = (
                set(sources) | {_name(transition["dest"])}
                if transition.get("dest")
                else set(sources)
            )
            if touched & legacy:
                raise SagaDefinitionError(
                    f"{cls.__name__}: the transition for {trigger} uses "
                    f"{sorted(touched & legacy)}, kept only for old instances: mark it with "
                    "versions=(...)"
                )
        entries.append((transition, versions, trigger, sources))
    specs = []
    for transition, versions, trigger, sources in entries:
        spec = {key: value for key, value in transition.items() if key != "versions"}
        if versions is not None:
            gate = Gate(frozenset(versions), {})
        else:
            excluded = {
                s: frozenset(marked[(trigger, s)]) for s in sources if (trigger, s) in marked
            }
            if not excluded:
                specs.append(spec)
                continue
            gate = Gate(None, excluded)
        conditions = spec.get("conditions") or []
        spec["conditions"] = [gate, *(conditions if isinstance(conditions, list) else [conditions])]
        specs.append(spec)
    return states, specs


@dataclass(frozen=True)
class Plan:
    """What loading does to one stored instance: its version and state before and after."""

    from_version: int
    from_state: str
    data_version: int
    to_version: int
    to_state: str
    current_version: int
    #: Why the instance cannot be loaded by this definition (None: it can).
    problem: str | None = None

    @property
    def changes(self) -> bool:
        """Whether the row changes (a version, the state, or the data's shape)."""
        return self.problem is None and (
            self.from_version != self.to_version
            or self.from_state != self.to_state
            or self.data_version != self.current_version
        )

    def describe(self) -> str:
        if self.problem is not None:
            return f"cannot be migrated: {self.problem}"
        path = (
            f"finishes on the v{self.to_version} path"
            if self.to_version != self.current_version
            else "follows the current path"
        )
        return f"v{self.to_version} {self.to_state} ({path})"


def plan(cls: type[Saga[Any]], definition_version: int, data_version: int, state: str) -> Plan:
    """What `cls` makes of an instance stored under `definition_version` in `state`."""
    current = cls.current_version

    def refused(problem: str) -> Plan:
        return Plan(
            definition_version, state, data_version, definition_version, state, current, problem
        )

    if definition_version > current or data_version > current:
        return refused(
            f"it was stored by v{max(definition_version, data_version)} of {cls.saga_type}, "
            f"newer than this v{current}: run the newer code"
        )
    new_state = cls.renamed.get(state, state)
    target = cls.removed.get(state, cls.removed.get(new_state))
    if target is not None and target != OLD_PATH:
        new_state = target
    if new_state not in cls.state_names:
        return refused(
            f"v{current} of {cls.saga_type} has no state {state!r}: map it in "
            f"{cls.__name__}.renamed, or in {cls.__name__}.removed (to a state, or to OLD_PATH)"
        )
    to_version = definition_version
    if new_state in cls.legacy_states:
        to_version = min(definition_version, current)
    elif cls.on_old_version == "migrate_at" and (
        EVERYWHERE in cls.migrate_at or new_state in cls.migrate_at
    ):
        to_version = current
    elif not _has_old_path(cls, definition_version):
        # Nothing was kept for this version: there is no old path to finish on.
        to_version = current
    return Plan(definition_version, state, data_version, to_version, new_state, current)


def upcast(cls: type[Saga[Any]], data: Mapping[str, Any], data_version: int) -> dict[str, Any]:
    """Stored data of `data_version`, turned into the current version's shape step by step."""
    result = dict(data)
    for version in range(data_version, cls.current_version):
        upcaster = cls.data_upcasters.get(version)
        if upcaster is not None:
            try:
                result = upcaster(result)
            except Exception as exc:
                raise SagaDefinitionError(
                    f"{cls.saga_type}: the data upcaster from v{version} failed on stored data "
                    f"({type(exc).__name__}: {exc}); fix {upcaster.__qualname__}"
                ) from exc
    if data_version < cls.current_version:
        _refuse_lost_fields(cls, result, data_version)
    return result


def _refuse_lost_fields(cls: type[Saga[Any]], data: Mapping[str, Any], data_version: int) -> None:
    """Stored data from an older version must not lose a field silently: the current model
    would ignore it, and the next save would drop it for good."""
    model = cls.data_type
    if model.model_config.get("extra") == "allow":
        return
    known = set(model.model_fields)
    known.update(f.alias for f in model.model_fields.values() if f.alias)
    # sagabox's own bookkeeping of joins and steps (`sagas.ledger`) serves only a definition
    # that declares them: one that declares none has nothing of it to keep.
    known.add(ledger.FIELD)
    lost = sorted(set(data) - known)
    if lost:
        raise SagaDefinitionError(
            f"{cls.saga_type}: stored v{data_version} data has {', '.join(map(repr, lost))}, which "
            f"the v{cls.current_version} data model {model.__name__} lacks, so it would be lost: "
            f"register @{cls.__name__}.data_upcaster(from_version={data_version}) that moves or "
            "drops it"
        )


def upcaster_registration(
    cls: type[Saga[Any]], from_version: int
) -> Callable[[DataUpcaster], DataUpcaster]:
    """The decorator behind `Saga.data_upcaster`."""

    def register(upcaster: DataUpcaster) -> DataUpcaster:
        if not 1 <= from_version < cls.current_version:
            raise SagaDefinitionError(
                f"{cls.__name__}.data_upcaster(from_version={from_version}): it must be an "
                f"older version than {cls.current_version}"
            )
        if is_coroutine_callable(upcaster):
            # Its coroutine would stand in for the data and fail at every load, not here.
            raise SagaDefinitionError(
                f"{cls.__name__}.data_upcaster(from_version={from_version}): "
                f"{getattr(upcaster, '__qualname__', repr(upcaster))} is `async def`, but "
                "upcasters run synchronously while a saga row is loaded and are never awaited: "
                "make it a plain `def` that takes the stored data and returns the new shape"
            )
        cls.data_upcasters[from_version] = upcaster
        return upcaster

    return register


def _has_old_path(cls: type[Saga[Any]], version: int) -> bool:
    return version in cls.old_versions


def old_versions(specs: Iterable[Mapping[str, Any]]) -> frozenset[int]:
    """The versions some transition of these specs is kept for."""
    found: set[int] = set()
    for spec in specs:
        for condition in spec.get("conditions") or []:
            if isinstance(condition, Gate) and condition.versions is not None:
                found.update(condition.versions)
    return frozenset(found)


def _sources(source: Any, states: list[str]) -> list[str]:
    if source == "*":
        return list(states)
    return [_name(s) for s in (source if isinstance(source, list | tuple) else [source])]


def _name(state: Any) -> str:
    from sagas.definition import state_name

    return state_name(state)
