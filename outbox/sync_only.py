"""Guards that keep the sync API sync: an `AsyncSession` or an `async def` callback given to it
fails loudly where it is given, saying what to use instead.

Without them, a sync call on an `AsyncSession` builds coroutines nobody awaits (the outbox row is
silently lost), and an `async def` handler returns a coroutine nobody awaits (its effect is lost
while the inbox records the message as done). The session check costs one `isinstance` on the
sync path; SQLAlchemy's asyncio module is only consulted for objects that are not sync ones.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from outbox.errors import AsyncSessionGiven

_ASYNC_MODULE = "sqlalchemy.ext.asyncio"


def is_async_executor(executor: object) -> bool:
    """Whether `executor` is one of SQLAlchemy's asyncio sessions or connections."""
    if isinstance(executor, Session | Connection):
        return False
    # Matched by module rather than imported: the asyncio extra (greenlet) may be absent.
    return any(cls.__module__.startswith(_ASYNC_MODULE) for cls in type(executor).__mro__)


def refuse_async(executor: object, api: str, instead: str) -> None:
    """Raise `AsyncSessionGiven` if `executor` is async: `api` was called, `instead` is the
    async form to use (e.g. "await AsyncOutbox(session).add(message)")."""
    if is_async_executor(executor):
        raise AsyncSessionGiven(
            f"{api} got {type(executor).__name__}, but it is synchronous: nothing would be "
            f"written. Use the async API: {instead} (sagabox.aio), or call the sync one "
            "inside `await session.run_sync(...)`"
        )


def is_coroutine_callable(func: Any) -> bool:
    """Whether calling `func` returns an awaitable instead of doing its work: an `async def`
    function or method, a partial of one, or an object whose `__call__` is one."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        return True
    call = getattr(type(func), "__call__", None)  # noqa: B004 - a class's own __call__, not callable()
    return not inspect.isfunction(func) and (
        inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
    )


def refuse_async_call(executor: object, function: str) -> None:
    """Raise `AsyncSessionGiven` if `executor` is async and `function` (a sync admin or query
    function with no async twin) was given it: it names the `run_sync` call to make instead."""
    if is_async_executor(executor):
        raise AsyncSessionGiven(
            f"{function}() got {type(executor).__name__}, but it is synchronous and has no async "
            f"form: call it on the sync session inside run_sync, e.g. "
            f"`await session.run_sync(lambda s: {function}(s, ...))`"
        )
