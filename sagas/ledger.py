"""The saga's own bookkeeping for joins and compensations, kept in its data under `sagabox`.

A saga that declares a `join` or compensated `steps` gets one more field in its data model:
the parts of each join received so far, and the step commands sent and completed. Keeping it
in the data (one JSON column) needs no schema change, moves with the saga row in the caller's
transaction, and shows in `sagabox sagas show` like the rest of the data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, create_model, model_serializer

from sagas.errors import SagaDefinitionError

if TYPE_CHECKING:
    from sagas.definition import Saga

#: The data field the bookkeeping lives in.
FIELD = "sagabox"


class SentStep(BaseModel):
    """A step's command as it was sent: the compensation is built from it."""

    destination: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)


class Ledger(BaseModel):
    """What the saga's joins and steps have seen so far."""

    #: Join name -> message type name -> the first such message received (as JSON).
    parts: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    #: The join that last kept a part, once parts of two joins are kept: `Saga.part` reads its
    #: parts first, so of two joins on one message type it reads the join the saga is in (or
    #: just left); the JSON column keeps no key order to tell them apart by.
    latest: str = ""
    #: Step command type name -> the last one sent.
    sent: dict[str, SentStep] = Field(default_factory=dict)
    #: Step command type names, in the order the steps were completed (and not compensated).
    done: list[str] = Field(default_factory=list)
    #: Compensating command type names, in the order they were sent.
    compensated: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only what was recorded: the saga's data stays readable in `sagas show` and the demo.
        return {key: value for key, value in handler(self).items() if value}


def with_ledger(cls: type[Saga[Any]], data_type: type[BaseModel]) -> type[BaseModel]:
    """`data_type` with the `sagabox` bookkeeping field added (a subclass, so the saga's own
    annotations still hold)."""
    if FIELD in data_type.model_fields:
        if data_type.model_fields[FIELD].annotation is Ledger:
            return data_type  # inherited from a saga base class that declared it already
        raise SagaDefinitionError(
            f"{cls.__name__}: {data_type.__name__}.{FIELD} is where sagabox keeps the joins' "
            "parts and the steps' progress; rename that field"
        )
    model = create_model(  # the same name, so messages and `sagas show` read as declared
        data_type.__name__,
        __base__=data_type,
        __module__=data_type.__module__,
        **{FIELD: (Ledger, Field(default_factory=Ledger))},  # type: ignore[call-overload]
    )
    return cast(type[BaseModel], model)


def ledger(saga: Saga[Any]) -> Ledger:
    """The bookkeeping of `saga` (whose class declares a join or steps)."""
    book = getattr(saga.data, FIELD, None)
    if not isinstance(book, Ledger):
        raise SagaDefinitionError(
            f"{saga.saga_type} declares no join and no compensated steps, so it keeps no parts"
        )
    return book
