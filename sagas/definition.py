"""The `Saga` base class: a saga's states, transitions and correlation, declared in one place.

One `transitions` machine is built per saga class, when the class is defined, and every instance
is driven through it: the machine never holds on to an instance, so memory does not grow with
the number of sagas.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel, ValidationError
from transitions import Machine, State

from outbox.messages import Message
from sagas import correlation, evolution, not_found
from sagas.declared import refuse_coroutines
from sagas.errors import (
    CorrelationChanged,
    MissingCorrelation,
    NotFoundHandler,
    NotFoundPolicy,
    SagaDefinitionError,
)
from sagas.timeouts import PendingTimeout

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sagas.context import SagaContext
    from sagas.diagram import Finding

DataT = TypeVar("DataT", bound=BaseModel)

#: How a saga finds its instance for a message: the name of a field of the message, or a
#: function of the message (or of the session and the message) returning the correlation id.
Correlator = str | Callable[..., object]

# Saga ids are derived from (saga type, correlation id), so a re-run finds the same id.
_SAGA_IDS = uuid.UUID("6f1f8a52-3c1e-4d7e-9a57-5f0c6b2d9e10")


def on(
    message: type[Message],
    source: Any,
    dest: Any,
    **options: Any,
) -> dict[str, Any]:
    """One transition, readable aloud: `on(CreditChecked, "checking", "offered", after="offer")`.

    `options` are `transitions`' own: `conditions`, `unless`, `before`, `after`, `prepare`.
    `dest=None` is an internal transition (no exit or enter callbacks run). A transition starts
    a saga when its source names the initial state; a wildcard source (`"*"`) starts one only
    with `starts=True`, so a stray message cannot create a saga behind `on_not_found`'s back
    (`starts=False` keeps a transition out of the initial state from starting one).
    `versions=(1,)` keeps a transition for instances started under those older versions only
    (see `sagas.evolution`): they finish on their old path while new ones take the current one.
    """
    return {"trigger": message, "source": source, "dest": dest, **options}


def state_name(state: Any) -> str:
    """The name sagabox stores for a state given as a string, an Enum member or a State."""
    if isinstance(state, Enum):
        return state.name
    if isinstance(state, State):
        return str(state.name)
    if isinstance(state, Mapping):
        return state_name(state["name"])
    return str(state)


class Saga(Generic[DataT]):
    """Base class of every saga: subclass it as `class LoanSaga(Saga[LoanData])`.

    Declare on the class: `states` (names, `transitions` State dicts, or an Enum; mark final
    ones `{"name": "paid", "final": True}`), `transitions` (see `on`), optionally `initial`
    (default: the first state), `correlation` (message class → field name or function; the
    default is the message's `correlation_id`), `ignore` (message class → states where it is
    dropped silently) and `on_not_found`. Actions, guards and `on_enter`/`on_exit` callbacks are
    methods named in those declarations; they receive `(ctx, message)`. Saga data is a pydantic
    model whose fields all have defaults, stored as JSON.

    A changed definition declares `version` (default 1), `renamed` and `removed` states,
    `on_old_version` and its old-path transitions (`on(..., versions=(1,))`), and data upcasters
    (`data_upcaster`): see `sagas.evolution`.

    `name=` (a class keyword) is the stable type name stored in the database; it defaults to the
    class name.
    """

    saga_type: ClassVar[str] = ""
    states: ClassVar[Any] = ()
    transitions: ClassVar[Sequence[Mapping[str, Any]]] = ()
    initial: ClassVar[Any] = None
    correlation: ClassVar[Mapping[type[Message], Correlator]] = {}
    ignore: ClassVar[Mapping[type[Message], Collection[Any]]] = {}
    on_not_found: ClassVar[NotFoundPolicy | NotFoundHandler] = "raise"
    # Evolution (see `sagas.evolution`): `version = 2` on the class, the maps for old rows'
    # states, and how instances started under an older version go on.
    renamed: ClassVar[Mapping[str, str]] = {}
    removed: ClassVar[Mapping[str, str]] = {}
    on_old_version: ClassVar[evolution.OldVersionPolicy] = "finish_old_path"
    migrate_at: ClassVar[Collection[str]] = ()

    # Built once per class from the declarations above.
    machine: ClassVar[Machine]
    data_type: ClassVar[type[BaseModel]]
    message_types: ClassVar[dict[str, type[Message]]]
    starting_triggers: ClassVar[frozenset[str]]
    final_states: ClassVar[frozenset[str]]
    state_names: ClassVar[tuple[str, ...]]
    initial_state: ClassVar[str]
    _ignored: ClassVar[dict[str, frozenset[str]]]
    _correlators: ClassVar[dict[str, Callable[[Session | None, Message], object]]]
    _state_enum: ClassVar[type[Enum] | None]
    current_version: ClassVar[int]
    data_upcasters: ClassVar[dict[int, evolution.DataUpcaster]]
    legacy_states: ClassVar[frozenset[str]]
    old_versions: ClassVar[frozenset[int]]

    # Per instance.
    id: uuid.UUID
    #: Random, drawn when this instance is created: tells it from a pruned one with the same
    #: correlation id, and is the secret the ids of the messages it emits are derived from.
    incarnation: uuid.UUID
    state: Any
    data: DataT
    version: int
    #: The `version` of the definition whose path this instance follows.
    definition_version: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    #: Pending timeouts by name (see `SagaContext.schedule`).
    timeouts: dict[str, PendingTimeout]

    def __init_subclass__(cls, *, name: str | None = None, abstract: bool = False) -> None:
        super().__init_subclass__()
        if not abstract:
            cls.saga_type = name or cls.__name__
            _build(cls)

    def __init__(
        self,
        *,
        correlation_id: str,
        state: str,
        data: DataT,
        version: int,
        created_at: datetime,
        updated_at: datetime,
        finished_at: datetime | None = None,
        saga_id: uuid.UUID | None = None,
        timeouts: dict[str, PendingTimeout] | None = None,
        incarnation: uuid.UUID | None = None,
        definition_version: int | None = None,
    ) -> None:
        self.id = saga_id or self.id_for(correlation_id)
        self._correlation_id = correlation_id
        self.incarnation = incarnation or uuid.uuid4()
        self.state = self._state_value(state)
        self.data = data
        self.version = version
        self.created_at = created_at
        self.updated_at = updated_at
        self.finished_at = finished_at
        self.timeouts = dict(timeouts or {})
        self.definition_version = definition_version or self.current_version
        #: Set by loading when the stored row is changed by a new version: journaled at the save.
        self.migration: evolution.Plan | None = None

    @classmethod
    def id_for(cls, correlation_id: str) -> uuid.UUID:
        """The id of this saga type's instance for `correlation_id` (the same every time)."""
        return uuid.uuid5(_SAGA_IDS, f"{cls.saga_type}\x00{correlation_id}")

    @property
    def correlation_id(self) -> str:
        """The key messages find this saga by; fixed once the saga exists."""
        return self._correlation_id

    @correlation_id.setter
    def correlation_id(self, value: str) -> None:
        if value != self._correlation_id:
            raise CorrelationChanged(
                f"{self.saga_type} {self._correlation_id!r} (id {self.id}): the correlation id "
                f"cannot change once the saga started (old {self._correlation_id!r}, new "
                f"{value!r}); keep the new key in the saga's data, or start a saga for it"
            )

    @property
    def state_name(self) -> str:
        """The current state's name, as stored."""
        return state_name(self.state)

    @property
    def is_finished(self) -> bool:
        """Whether the saga reached a final state."""
        return self.finished_at is not None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.correlation_id!r} in {self.state_name!r} "
            f"v{self.version}>"
        )

    @classmethod
    def mermaid(cls, path: Sequence[str] = ()) -> str:
        """This saga as a Mermaid state diagram, with the states on `path` highlighted."""
        from sagas.diagram import mermaid

        return mermaid(cls, path)

    @classmethod
    def check(cls, occupied: Collection[tuple[int, str]] = ()) -> list[Finding]:
        """Design slips in this saga: unreachable states, dead ends, unused messages, and
        (version, state) pairs of live instances in `occupied` this definition cannot load."""
        from sagas.diagram import check

        return check(cls, occupied)

    @classmethod
    def data_upcaster(
        cls, *, from_version: int
    ) -> Callable[[evolution.DataUpcaster], evolution.DataUpcaster]:
        """Register a function turning stored data of `from_version` (a dict) into the next
        version's, applied when an older instance is loaded: `@LoanSaga.data_upcaster(
        from_version=1)`."""
        return evolution.upcaster_registration(cls, from_version)

    # --- used by the runtime ---

    @classmethod
    def correlate(cls, message: Message, session: Session | None = None) -> str:
        """Find the correlation id of the instance `message` belongs to."""
        correlator = cls._correlators.get(message.type_name, _default_correlator)
        value = correlator(session, message)
        if value is None or value == "":
            raise MissingCorrelation(
                f"{cls.saga_type}: {message.type_name} (message {message.message_id}) has no "
                f"correlation value; set its correlation field, or map it in "
                f"{cls.__name__}.correlation"
            )
        return correlation.checked(cls.saga_type, message, str(value))

    def allows(self, message: Message) -> bool:
        """Whether a transition for `message` leaves the current state."""
        event = self.machine.events.get(message.type_name)
        return event is not None and any(
            evolution.admits(t, self) for t in event.transitions.get(self.state_name, ())
        )

    def ignores(self, message: Message) -> bool:
        """Whether the saga declared `message` to be dropped in the current state."""
        return self.state_name in self._ignored.get(message.type_name, ())

    def fire(self, ctx: SagaContext, message: Message) -> bool:
        """Run the transition for `message`; False when its guards refused every branch."""
        return bool(self.machine.events[message.type_name].trigger(self, ctx, message))

    def _state_value(self, name: str) -> Any:
        # Enum machines keep the member on the model; loaded rows hold the member's name.
        if self._state_enum is not None:
            try:
                return self._state_enum[name]
            except KeyError:
                raise SagaDefinitionError(
                    f"{self.saga_type}: stored state {name!r} is not a member of "
                    f"{self._state_enum.__name__}; was it renamed?"
                ) from None
        if name not in self.state_names:
            raise SagaDefinitionError(
                f"{self.saga_type}: stored state {name!r} is not declared; was it renamed?"
            )
        return name


def _default_correlator(_session: Session | None, message: Message) -> object:
    return message.correlation_id


def _build(cls: type[Saga[Any]]) -> None:
    """Check a saga class's declarations and build its one machine."""
    cls.data_type = _data_type(cls)
    try:
        cls.data_type()
    except ValidationError as exc:
        raise SagaDefinitionError(
            f"{cls.__name__}: every field of {cls.data_type.__name__} needs a default, because "
            f"a new saga starts from {cls.data_type.__name__}() ({exc.error_count()} missing)"
        ) from None

    states = cls.states
    cls._state_enum = states if isinstance(states, type) and issubclass(states, Enum) else None
    if not list(states):
        raise SagaDefinitionError(f"{cls.__name__}: declare its `states`")
    declared, gated = evolution.prepare(cls, list(states), cls.transitions)
    cls.state_names = tuple(state_name(s) for s in declared)
    cls.old_versions = evolution.old_versions(gated)
    initial = cls.initial if cls.initial is not None else declared[0]
    cls.initial_state = state_name(initial)

    message_types: dict[str, type[Message]] = {}
    spec: list[dict[str, Any]] = []
    starting: set[str] = set()
    for transition in gated:
        trigger = transition.get("trigger")
        if not (isinstance(trigger, type) and issubclass(trigger, Message) and trigger.type_name):
            raise SagaDefinitionError(
                f"{cls.__name__}: a transition's trigger must be a message class, got {trigger!r}"
            )
        message_types[trigger.type_name] = trigger
        _check_states(cls, trigger, transition)
        if _starts(cls, trigger, transition):
            starting.add(trigger.type_name)
        spec.append(
            {key: value for key, value in transition.items() if key != "starts"}
            | {"trigger": trigger.type_name}
        )
    cls.message_types = message_types
    refuse_coroutines(cls)
    not_found.check(cls)

    try:
        cls.machine = Machine(
            model=None,  # instances are driven through it, never attached to it
            states=states if cls._state_enum is not None else declared,
            transitions=spec,
            initial=initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            model_attribute="state",
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SagaDefinitionError(f"{cls.__name__}: {exc}") from exc

    cls.final_states = frozenset(
        name for name in cls.state_names if getattr(cls.machine.get_state(name), "final", False)
    )
    cls.starting_triggers = frozenset(starting)
    cls._correlators = {
        message.type_name: _correlator(cls, message, how)
        for message, how in cls.correlation.items()
    }
    cls._ignored = {}
    for message, ignored_states in cls.ignore.items():
        names = frozenset(state_name(s) for s in ignored_states)
        unknown = names.difference(cls.state_names)
        if unknown:
            raise SagaDefinitionError(
                f"{cls.__name__}.ignore names undeclared states {sorted(unknown)} for "
                f"{message.__name__}"
            )
        cls._ignored[message.type_name] = names
        cls.message_types.setdefault(message.type_name, message)


def _check_states(
    cls: type[Saga[Any]], trigger: type[Message], transition: Mapping[str, Any]
) -> None:
    # transitions accepts undeclared states silently; a typo would only show at run time.
    sources = transition.get("source")
    named = [] if sources == "*" else sources if isinstance(sources, list | tuple) else [sources]
    if transition.get("dest") is not None:
        named = [*named, transition["dest"]]
    unknown = sorted({state_name(s) for s in named} - set(cls.state_names))
    if unknown:
        raise SagaDefinitionError(
            f"{cls.__name__}: the transition on {trigger.__name__} names undeclared states "
            f"{unknown}; declare them in `states`"
        )


def _starts(cls: type[Saga[Any]], trigger: type[Message], transition: Mapping[str, Any]) -> bool:
    """Whether the transition creates a saga: its source names the initial state, or it says
    `starts=True` (needed for a wildcard source, which would otherwise start one by accident)."""
    sources = transition.get("source")
    wildcard = sources == "*" or (isinstance(sources, list | tuple) and "*" in sources)
    named = [] if sources == "*" else sources if isinstance(sources, list | tuple) else [sources]
    from_initial = cls.initial_state in {state_name(s) for s in named if s != "*"}
    starts = transition.get("starts")
    if starts is None:
        return from_initial
    if starts and not (from_initial or wildcard):
        raise SagaDefinitionError(
            f"{cls.__name__}: the transition on {trigger.__name__} says starts=True, but its "
            f"source does not include the initial state {cls.initial_state!r}"
        )
    return bool(starts)


def _data_type(cls: type[Saga[Any]]) -> type[BaseModel]:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Saga):
            (argument,) = get_args(base)
            if isinstance(argument, type) and issubclass(argument, BaseModel):
                return argument
    inherited = getattr(cls, "data_type", None)
    if inherited is None:
        raise SagaDefinitionError(
            f"{cls.__name__}: name its data model, as in `class {cls.__name__}(Saga[MyData])`"
        )
    return cast(type[BaseModel], inherited)


def _correlator(
    cls: type[Saga[Any]], message: type[Message], how: Correlator
) -> Callable[[Session | None, Message], object]:
    if isinstance(how, str):
        if how not in message.model_fields:
            raise SagaDefinitionError(
                f"{cls.__name__}.correlation: {message.__name__} has no field {how!r}"
            )
        return lambda _session, msg: getattr(msg, how)
    if not callable(how):
        raise SagaDefinitionError(
            f"{cls.__name__}.correlation[{message.__name__}] must be a field name or a function"
        )
    arity = len(inspect.signature(how).parameters)
    if arity == 1:
        return lambda _session, msg: how(msg)
    if arity == 2:
        return lambda session, msg: how(session, msg)
    raise SagaDefinitionError(
        f"{cls.__name__}.correlation[{message.__name__}]: a finder takes (message) or "
        "(session, message)"
    )
