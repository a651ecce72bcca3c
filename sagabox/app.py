"""`App`: one endpoint of a service — its name, database, broker, sagas and plain handlers.

The worker and relay take their settings from it (`sagabox worker --app module:app`), and a
service uses the same object in its request handlers to start sagas in its own transactions.
This is the composition root: the only place where sagas and the relay meet.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from outbox.database import make_engine
from outbox.handlers import (
    HandlerContext,
    handled_types,
    handler_name,
    refuse_coroutine_handler,
)
from outbox.inbox import Inbox
from outbox.messages import Event, Message
from outbox.registry import MessageRegistry, default_registry
from outbox.sync_only import refuse_async
from relay.broker import DEFAULT_EXCHANGE
from relay.daemon import Relay
from relay.worker import RetryPolicy, Unrecoverable, Worker
from sagabox.settings import load_settings
from sagas.definition import Saga
from sagas.errors import (
    ConcurrencyConflict,
    InvalidCorrelationId,
    SagaNotFound,
    UnknownSagaType,
    UnstorableSagaData,
)
from sagas.requests import Misaddressed
from sagas.runtime import SagaRuntime

if TYPE_CHECKING:
    from sagabox.aio import AsyncApp
    from sagabox.metrics import Metrics

DATABASE_ENV = "SAGABOX_DATABASE_URL"
S = TypeVar("S", bound=Saga[Any])

Handler = Callable[[HandlerContext, Any], object]
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class App:
    """An endpoint: the queue named `name` receives commands sent to it and the events its sagas
    and handlers subscribe to; its inbox is named after it too.

    `inputs` names the messages that enter the system here from outside any handler (a web
    request, another system), for `sagabox graph`. `database` and `broker` default to
    $SAGABOX_DATABASE_URL and $SAGABOX_BROKER_URL (and the in-process `memory://` broker), so
    one app module serves every environment.
    """

    def __init__(
        self,
        name: str,
        *,
        sagas: Iterable[type[Saga[Any]]] = (),
        handlers: Iterable[Handler] = (),
        database: str | None = None,
        broker: str | None = None,
        registry: MessageRegistry = default_registry,
        exchange: str = DEFAULT_EXCHANGE,
        retry: RetryPolicy | None = None,
        inputs: Iterable[type[Message]] = (),
    ) -> None:
        if not _ENDPOINT_NAME.match(name):
            raise ValueError(
                f"endpoint name {name!r} must be letters, digits, '_', '.', '-' (it names a "
                "queue and a routing key)"
            )
        self.name = name
        self.runtime = SagaRuntime(sagas, endpoint=name)
        self._handlers: dict[str, list[tuple[str, Handler]]] = defaultdict(list)
        for handler in handlers:
            self.add_handler(handler)
        self._database = database
        self._broker = broker
        self._registry = registry
        self.exchange = exchange
        self.retry = retry or RetryPolicy(retry_at_once=(ConcurrencyConflict,))
        #: Messages that enter the system here from outside any handler (a web request, a
        #: script, another system); `sagabox graph --check` expects no handler to send them.
        self.inputs = tuple(inputs)
        #: Set to a `sagabox.metrics.Metrics` to count what the worker, relay and sagas do.
        self.metrics: Metrics | None = None

    # --- configuration ------------------------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        """Register a function marked with `@handles(...)`."""
        # Also here: a wrapper copying the mark (functools.wraps) may be `async def`.
        refuse_coroutine_handler(handler, "App.add_handler")
        name = handler_name(handler)
        for message_type in handled_types(handler):
            self._handlers[message_type.type_name].append((name, handler))

    @property
    def handlers(self) -> list[tuple[str, str, Handler]]:
        """(message type, handler name, handler) for every plain handler registered here."""
        return [
            (message, name, handler)
            for message, handlers in self._handlers.items()
            for name, handler in handlers
        ]

    @property
    def registry(self) -> MessageRegistry:
        """Where incoming type names are looked up."""
        return self._registry

    @property
    def database_url(self) -> str:
        """The database this endpoint's worker and relay use."""
        url = self._database or load_settings().database_url
        if not url:
            raise ValueError(
                f"app {self.name!r} has no database: pass App(database=...), set "
                f"${DATABASE_ENV}, or give --db"
            )
        return url

    @property
    def broker_url(self) -> str:
        """The broker this endpoint's worker and relay use."""
        return self._broker or load_settings().broker_url or "memory://"

    def configure(self, *, database: str | None = None, broker: str | None = None) -> None:
        """Override the database or broker (the CLI's --db and --broker) before first use."""
        if database:
            self._database = database
            self.__dict__.pop("engine", None)
            self.__dict__.pop("aio", None)
        if broker:
            self._broker = broker

    @cached_property
    def aio(self) -> AsyncApp:
        """This endpoint for asyncio services: `await app.aio.start(session, SagaType, msg)`
        on an `AsyncSession` (see `sagabox.aio`; needs `pip install 'sagabox[asyncio]'`)."""
        from sagabox.aio import AsyncApp

        return AsyncApp(self)

    @cached_property
    def engine(self) -> Engine:
        """The engine the worker and relay share.

        No ping on checkout: the worker retries at once a message whose connection turns out
        dropped (and the relay backs off and retries), so a database restart costs one failed
        statement, where a ping cost every message a round trip (9% of a worker's steps/s).
        """
        return make_engine(self.database_url)

    # --- the Endpoint protocol the worker serves ------------------------------------------------

    def routing_keys(self) -> list[str]:
        """Its name, for commands sent to it, and every event type it handles."""
        events = sorted(
            name
            for name in self._handled_type_names()
            if name in self._registry and issubclass(self._registry.resolve(name), Event)
        )
        return [self.name, *events]

    def accepts(self, type_name: str) -> bool:
        """Whether a saga or handler here takes `type_name`."""
        return type_name in self._handlers or bool(self.runtime.interested_in_type(type_name))

    def saga_types_for(self, type_name: str) -> list[str]:
        """The saga types `type_name` goes to here (for the worker's log line)."""
        return [saga.saga_type for saga in self.runtime.interested_in_type(type_name)]

    def begin_batch(self, session: Session, messages: Sequence[Message]) -> None:
        """Lock and read the saga rows `messages` will touch; defer their writes to the commit."""
        refuse_async(session, "App.begin_batch", "one message at a time with app.aio.dispatch")
        self.runtime.begin_batch(session, messages)

    def dispatch(self, session: Session, message: Message) -> None:
        """Deliver `message` to the sagas, then the plain handlers, in `session`'s transaction."""
        refuse_async(session, "App.dispatch", "await app.aio.dispatch(session, message)")
        self._dispatch(session, message, None)

    def dispatch_new(self, session: Session, message: Message, inbox: Inbox) -> bool:
        """Record `message` in `inbox` and, if it is new, `dispatch` it; False for a duplicate.

        The worker's unbatched path: the runtime records it with its first saga read, in one
        statement where the database allows (`SagaRuntime.handle_new`).
        """
        refuse_async(session, "App.dispatch_new", "await app.aio.dispatch(session, message)")
        return self._dispatch(session, message, inbox)

    def _dispatch(self, session: Session, message: Message, inbox: Inbox | None) -> bool:
        try:
            if inbox is None:
                handled = self.runtime.handle(session, message)
            else:
                recorded = self.runtime.handle_new(session, message, inbox)
                if recorded is None:
                    return False
                handled = recorded
        except SagaNotFound as exc:
            if exc.policy == "dead_letter":
                raise Unrecoverable(str(exc)) from exc
            raise
        except (Misaddressed, InvalidCorrelationId, UnstorableSagaData) as exc:
            # Forged or mangled reply headers, a correlation id no saga can have, or data no
            # saga can store: the same message fails the same way on every try.
            raise Unrecoverable(str(exc)) from exc
        for name, handler in self._handlers.get(message.type_name, ()):
            handler(HandlerContext(session, message, f"{self.name}/{name}"), message)
        metrics = self.metrics
        if metrics is not None and handled:
            # Counted once the transaction commits: a rolled-back attempt changed nothing.
            event.listen(
                session,
                "after_commit",
                lambda _session: metrics.sagas_handled(handled, message),
                once=True,
            )
        return True

    # --- processes ------------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker consuming this endpoint's queue (options as for `Worker`)."""
        options.setdefault("retry", self.retry)
        options.setdefault("exchange", self.exchange)
        if self.metrics is not None:
            options.setdefault("observer", self.metrics)
        return Worker(self.engine, self.broker_url, self, **options)

    def relay(self, **options: Any) -> Relay:
        """A relay shipping this database's outbox to this broker (options as for `Relay`)."""
        options.setdefault("exchange", self.exchange)
        if self.metrics is not None:
            options.setdefault("observer", self.metrics)
        return Relay(self.engine, self.broker_url, **options)

    def start(self, session: Session, saga_type: type[S], message: Message) -> S:
        """Start a saga from a request handler, in the caller's transaction."""
        refuse_async(session, "App.start", "await app.aio.start(session, SagaType, message)")
        self.check_runs(saga_type)
        return self.runtime.start(session, saga_type, message)

    def check_runs(self, saga_type: type[Saga[Any]]) -> None:
        """Raise `UnknownSagaType` unless this App runs `saga_type`: a saga started elsewhere would
        wait for messages that this App's worker never routes to it."""
        if saga_type not in self.runtime.sagas:
            known = ", ".join(sorted(saga.__qualname__ for saga in self.runtime.sagas)) or "none"
            raise UnknownSagaType(
                f"App {self.name!r} does not run {saga_type.__qualname__} (its sagas: {known}): "
                f"pass it in App({self.name!r}, sagas=[...]), or start it on the App that runs it"
            )

    def _handled_type_names(self) -> set[str]:
        return set(self._handlers) | self.runtime.message_type_names()


def load_apps(spec: str) -> list[App]:
    """Import `module:attribute`: an App, or a function returning an App or a list of Apps."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"--app takes module:attribute, e.g. myservice.endpoint:app (got {spec!r})"
        )
    # Like celery and gunicorn: the service's own modules are found from where it is started.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise  # the app's own code imports something missing: its own error says what
        raise ValueError(
            f"--app {spec}: no module {exc.name!r} in {os.getcwd()} (the folder sagabox was "
            "started in) nor on PYTHONPATH: start sagabox from your service's folder, or add "
            "the folder holding it to PYTHONPATH"
        ) from None
    if not hasattr(module, attribute):
        raise ValueError(
            f"--app {spec}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
            f"attribute {attribute!r}"
        )
    found = getattr(module, attribute)
    if callable(found) and not isinstance(found, App):
        found = found()
    candidates = found if isinstance(found, list) else [found]
    apps = [app for app in candidates if isinstance(app, App)]
    if not apps or len(apps) != len(candidates):
        raise ValueError(f"{spec} is {type(found).__name__}, not a sagabox App (or a list of them)")
    return apps


def load_app(spec: str, endpoint: str | None = None) -> App:
    """The one App `spec` names; `endpoint` picks one by name when it names several."""
    apps = load_apps(spec)
    if endpoint is not None:
        chosen = [app for app in apps if app.name == endpoint]
        if not chosen:
            names = ", ".join(app.name for app in apps)
            raise ValueError(f"{spec} has no endpoint {endpoint!r} (it has: {names})")
        apps = chosen
    if len(apps) > 1:
        names = ", ".join(app.name for app in apps)
        raise ValueError(f"{spec} names several endpoints ({names}): choose one with --endpoint")
    return apps[0]
