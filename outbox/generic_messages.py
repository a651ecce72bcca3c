"""Message types parametrised by another message type, such as `Faulted[ChargeCard]`.

`Base[Cmd]` is a concrete message class made (once) on first use and registered as
`<base type name>.<Cmd's type name>`, so a saga can declare a transition for the fault of one
command, and the receiver, knowing only the command's type name, can address it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from outbox.messages import Message

M = TypeVar("M", bound=Message)

_MADE: dict[tuple[type[Message], type[Message]], type[Message]] = {}


def parametrised(base: type[M], prefix: str, item: Any) -> type[M]:
    """`base` for the message class `item`, registered as `<prefix>.<item's type name>`."""
    if not (isinstance(item, type) and issubclass(item, Message) and item.type_name):
        raise TypeError(f"{base.__name__}[...] takes a concrete message class, got {item!r}")
    made = _MADE.get((base, item))
    if made is None:
        namespace: dict[str, Any] = {
            "__module__": base.__module__,
            "__qualname__": f"{base.__qualname__}[{item.__qualname__}]",
            "of": item,
        }
        made = type(base)(  # type: ignore[misc] # pydantic's metaclass, with class keywords
            f"{base.__name__}[{item.__name__}]",
            (base,),
            namespace,
            type=type_name_of(prefix, item.type_name),
            registry=item.registry,
        )
        _MADE[(base, item)] = made
    return made  # type: ignore[return-value] # made above as a subclass of base


def type_name_of(prefix: str, type_name: str) -> str:
    """The type name of `<prefix>[...]` for the message type named `type_name`."""
    return f"{prefix}.{type_name}"
