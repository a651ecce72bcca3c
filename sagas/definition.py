"""The `Saga` base class: a saga's states, transitions and correlation, declared in one place.

One `transitions` machine is built per saga class, when the class is defined, and every instance
is driven through it: the machine never holds on to an instance, so memory does not grow with
the number of sagas.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel
from transitions import Machine

from outbox.messages import Message
from sagas import correlation, evolution, transition_table
from sagas.building import build, default_correlator
from sagas.building import state_name as state_name
from sagas.compensation import Step
from sagas.errors import (
    CorrelationChanged,
    InvalidCorrelationId,
    MissingCorrelation,
    NotFoundHandler,
    NotFoundPolicy,
    SagaDefinitionError,
)
from sagas.joins import Join
from sagas.joins import part as join_part
from sagas.timeouts import PendingTimeout

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sagas.context import SagaContext
    from sagas.diagram import Finding

DataT = TypeVar("DataT", bound=BaseModel)
M = TypeVar("M", bound=Message)

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
    #: The commands this saga sends that are undone when it fails (see `sagas.compensation`).
    steps: ClassVar[Sequence[Step]] = ()

    # Built once per class from the declarations above.
    machine: ClassVar[Machine]
    _transition_table: ClassVar[transition_table.Table]
    joins: ClassVar[tuple[Join, ...]]
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
            build(cls)

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

    def part(self, message_type: type[M]) -> M | None:
        """The message of `message_type` a `join` of this saga kept (None: not in yet)."""
        return join_part(self, message_type)

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
        correlator = cls._correlators.get(message.type_name, default_correlator)
        value = correlator(session, message)
        if value == "" and not getattr(correlator, "looks_up", False):
            # A field (or a function of the message alone) that is empty stays empty on every
            # retry: bad input, which a worker dead-letters at once.
            raise InvalidCorrelationId(
                f"{cls.saga_type}: {message.type_name} (message {message.message_id}) maps to "
                f"an empty correlation id; set its correlation field, or map it in "
                f"{cls.__name__}.correlation"
            )
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
        """Run the transition for `message`; False when its guards refused every branch.

        Through the class's precomputed table where it has the transition (the worker's hot
        path, `sagas.transition_table`), through the machine otherwise.
        """
        fired = transition_table.fire(
            self._transition_table, self.machine, self, self.state_name, ctx, message
        )
        if fired is None:
            fired = self.machine.events[message.type_name].trigger(self, ctx, message)
        return bool(fired)

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
