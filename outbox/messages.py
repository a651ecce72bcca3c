"""The message base classes: every command and event is a pydantic model with a stable type name."""

from __future__ import annotations

import re
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from outbox import clock
from outbox.errors import MessageTypeError
from outbox.registry import MessageRegistry, default_registry

#: Fields every message carries; on the wire they travel as headers, not in the payload.
META_FIELDS = frozenset({"message_id", "occurred_at", "correlation_id", "causation_id"})

_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Message(BaseModel):
    """Base of every message: an immutable pydantic model with identity and causality metadata.

    Subclasses register themselves under a type name that must stay stable once messages are
    stored or sent (`class LoanApproved(Event, type="loans.LoanApproved", version=1)`); it
    defaults to the class name. Pass `abstract=True` for a shared base that is never sent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=clock.now)
    correlation_id: str | None = None
    causation_id: UUID | None = None

    type_name: ClassVar[str] = ""
    type_version: ClassVar[int] = 0
    registry: ClassVar[MessageRegistry] = default_registry

    @classmethod
    def __pydantic_init_subclass__(
        cls,
        *,
        type: str | None = None,  # noqa: A002 - the class keyword reads best as `type=`
        version: int = 1,
        abstract: bool = False,
        registry: MessageRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if registry is not None:
            cls.registry = registry
        if abstract:
            cls.type_name, cls.type_version = "", 0
            return
        name = type or cls.__name__
        if not _TYPE_NAME.match(name):
            raise MessageTypeError(
                f"{name!r} is not a usable message type name: use dotted identifiers such as "
                "'loans.LoanApproved' (they become routing keys)"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise MessageTypeError(f"{cls.__qualname__}: version must be an integer >= 1")
        cls.type_name, cls.type_version = name, version
        cls.registry.register(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # pydantic hands the class keywords to __pydantic_init_subclass__ above as well; object's
        # own hook accepts none, so they stop here.
        super().__init_subclass__()

    def caused_by(self, cause: Message) -> Message:
        """Return a copy that carries `cause`'s correlation id and names it as its cause."""
        return self.model_copy(
            update={
                "correlation_id": cause.correlation_id or self.correlation_id,
                "causation_id": cause.message_id,
            }
        )


class Command(Message, abstract=True):
    """A request addressed to one endpoint, which may refuse it ("ChargePayment")."""


class Event(Message, abstract=True):
    """A fact that happened, published to whoever subscribes ("PaymentCharged")."""
