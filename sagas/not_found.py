"""What a saga does with a message for an instance that does not exist: its `on_not_found`.

"raise" (retry: the starting message may still be on its way), "dead_letter" (park it at once),
"ignore" (journal it, drop it), or a function `(session, message) -> None` (a `@classmethod` or
`@staticmethod` taking them too) run in the message's transaction, as NServiceBus's
saga-not-found handlers are: it may write business rows or send messages, and if it raises, the
message fails as with any failing handler (retried, then dead-lettered).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from outbox.database import Executor
from outbox.messages import Message
from outbox.sync_only import is_coroutine_callable
from sagas.errors import SagaDefinitionError

if TYPE_CHECKING:
    from sagas.definition import Saga

#: The policies given by name.
POLICIES = ("raise", "dead_letter", "ignore")


def check(cls: type[Saga[Any]]) -> None:
    """Refuse an `on_not_found` that is neither a known policy nor a `(session, message)`
    function, when the class is defined."""
    # Read through the class, as the runtime calls it: a classmethod comes out bound to the
    # saga class and a staticmethod as its function, both then called (session, message).
    policy = cls.on_not_found
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise SagaDefinitionError(
                f"{cls.__name__}.on_not_found is {policy!r}: use one of {', '.join(POLICIES)}, "
                "or a function (session, message) -> None"
            )
        return
    if not callable(policy):
        raise SagaDefinitionError(
            f"{cls.__name__}.on_not_found must be a policy name or a function (session, message)"
        )
    if is_coroutine_callable(policy):
        # Called in the message's transaction and never awaited: the coroutine would be
        # dropped and the message journaled `not_found` as if it had run.
        raise SagaDefinitionError(
            f"{cls.__name__}.on_not_found is `async def`, but it runs synchronously in the "
            "message's transaction and is never awaited: make it a plain `def` "
            "(session, message) -> None"
        )
    try:
        inspect.signature(policy).bind(None, None)
    except TypeError:
        raise SagaDefinitionError(
            f"{cls.__name__}.on_not_found: a not-found handler takes (session, message)"
        ) from None
    except ValueError:
        return  # no signature to read (a builtin): it is called all the same


def handled(cls: type[Saga[Any]], executor: Executor, message: Message) -> bool:
    """Apply a policy that settles the message here: True after "ignore" or after running the
    saga's not-found function (its errors propagate); False for "raise" and "dead_letter"."""
    policy: Any = cls.on_not_found
    if isinstance(policy, str):
        return policy == "ignore"
    policy(executor, message)
    return True
