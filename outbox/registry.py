"""The table from a message's type name to its class, with upcasters for older versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from outbox.errors import DuplicateMessageType, UnknownMessageType, UnknownMessageVersion

if TYPE_CHECKING:
    from outbox.messages import Message

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class MessageRegistry:
    """Maps stable type names to message classes, so a stored or received message finds its class.

    Message classes register themselves when defined (see `Message`); a registry of your own keeps
    test or plugin types apart from the process-wide default.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Message]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[Message]) -> None:
        """Register `cls` under its type name; a different class under the same name is an error."""
        name = cls.type_name
        known = self._by_name.get(name)
        if known is not None and _qualified(known) != _qualified(cls):
            raise DuplicateMessageType(
                f"message type {name!r} is claimed by both {_qualified(known)} and "
                f"{_qualified(cls)}: give one of them its own name, e.g. "
                f"`class {cls.__name__}(Event, type='billing.{cls.__name__}')`"
            )
        # The same class defined again (a module reload) replaces the old definition.
        self._by_name[name] = cls

    def resolve(self, type_name: str) -> type[Message]:
        """Return the class registered under `type_name`."""
        try:
            return self._by_name[type_name]
        except KeyError:
            raise UnknownMessageType(
                f"no message class is registered as {type_name!r}: import the module that "
                f"defines it before decoding (known types: {_some(self._by_name)})"
            ) from None

    def upcaster(self, type_name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a `from_version` payload into a `from_version + 1` one."""

        def decorate(func: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = func
            return func

        return decorate

    def upcast(self, type_name: str, version: int, payload: Payload) -> Payload:
        """Bring a payload written at `version` up to the registered class's version."""
        target = self.resolve(type_name).type_version
        if version > target:
            raise UnknownMessageVersion(
                f"{type_name!r} arrived at version {version}, but this process only knows up to "
                f"version {target}: deploy the newer message definitions to this consumer first"
            )
        while version < target:
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise UnknownMessageVersion(
                    f"{type_name!r} arrived at version {version}, and there is no upcaster from "
                    f"version {version} to {version + 1}: register one with "
                    f"@registry.upcaster({type_name!r}, from_version={version})"
                )
            payload = step(payload)
            version += 1
        return payload

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_name

    def __iter__(self) -> Iterator[type[Message]]:
        return iter(self._by_name.values())


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _some(names: dict[str, Any], limit: int = 10) -> str:
    shown = sorted(names)[:limit]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if shown else "none"


default_registry = MessageRegistry()
