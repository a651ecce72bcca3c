"""`create_app`: the dashboard as one Starlette ASGI app, to mount in a host app or run alone."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, pass_context
from sqlalchemy import Connection, Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from outbox import clock
from outbox.dead_letter_groups import (
    discard_logged,
    group_ids,
    replay_logged,
)
from outbox.dead_letters import get_dead_letter
from outbox.errors import SagaboxError
from outbox.operator_log import recent_actions
from sagabox.web import data, forms
from sagabox.web.counts import CountsCache, GroupsCache
from sagabox.web.diagram import reachable_from, svg
from sagabox.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Authenticate,
    BasicAuth,
    basic_auth_from_env,
    csrf_ok,
    new_csrf_token,
)
from sagas.errors import SagaError
from sagas.queries import saga_detail
from sagas.timeout_admin import cancel_timeout, fire_timeout, reschedule_timeout

if TYPE_CHECKING:
    from sagabox.app import App
    from sagas.definition import Saga

T = TypeVar("T")

#: Letters listed under each dead-letter group (the group's actions reach all of them).
LETTERS_PER_GROUP = 10
#: Dead-letter groups a page lists, the largest first; the next ones on the next page.
GROUPS_PER_PAGE = 20


class Dashboard:
    """The pages and actions, bound to one engine and the apps whose sagas it knows."""

    def __init__(
        self,
        engine: Engine,
        apps: Sequence[App],
        *,
        actions: bool,
        authenticate: Authenticate | None,
        stuck_after: timedelta,
        refresh_seconds: int,
        counts_max_age: timedelta,
    ) -> None:
        self.engine = engine
        self.counts = CountsCache(engine, max_age=counts_max_age)
        self.groups = GroupsCache(engine)
        self.apps = list(apps)
        self.sagas: dict[str, type[Saga[Any]]] = {
            saga.saga_type: saga for app in self.apps for saga in app.runtime.sagas
        }
        self.actions = actions
        self.authenticate = authenticate
        self.stuck_after = stuck_after
        self.refresh_seconds = refresh_seconds
        environment = Environment(loader=PackageLoader("sagabox.web", "templates"), autoescape=True)
        environment.filters["when"] = _when
        environment.filters["age"] = _age
        environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, default=str)
        self.templates = Jinja2Templates(env=environment)
        # Links as paths (with the mount prefix), not absolute URLs: right behind any proxy.
        environment.globals["url_for"] = _path_for

    # --- plumbing ---------------------------------------------------------------------------

    async def read(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as connection:
                return work(connection)

        return await run_in_threadpool(run)

    def page(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> Response:
        token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        response = self.templates.TemplateResponse(
            request,
            template,
            status_code=status_code,
            context={
                "actions": self.actions,
                "csrf_field": CSRF_FIELD,
                "csrf_token": token,
                "message": request.query_params.get("msg", ""),
                "refresh_seconds": self.refresh_seconds,
                **context,
            },
        )
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                path=request.scope.get("root_path") or "/",
            )
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def action_form(self, request: Request) -> tuple[str, dict[str, str]] | Response:
        """The actor and the form of an allowed action, or the response refusing it."""
        if not self.actions:
            return PlainTextResponse(
                "this dashboard is read-only: start it with actions enabled "
                "(sagabox web --actions, or create_app(..., actions=True))",
                status_code=403,
            )
        actor = await self.actor(request)
        if actor is None:
            headers = {}
            if isinstance(self.authenticate, BasicAuth):
                headers["WWW-Authenticate"] = BasicAuth.challenge
            return PlainTextResponse("authentication required", status_code=401, headers=headers)
        body = (await request.body()).decode("utf-8", "replace")
        form = {key: values[-1] for key, values in parse_qs(body).items()}
        if any(forms.NUL in value for value in form.values()):
            return PlainTextResponse(forms.NUL_REFUSED, status_code=400)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return PlainTextResponse(
                "the form's CSRF token is missing or wrong: reload the page and try again",
                status_code=403,
            )
        return actor, form

    async def actor(self, request: Request) -> str | None:
        """Who the authentication check says is asking, or None: an async host-app check is
        awaited (its coroutine object is no name), and an empty name is a refusal."""
        if self.authenticate is None:
            return None
        actor: object = self.authenticate(request)
        if inspect.isawaitable(actor):
            actor = await actor
        return actor if isinstance(actor, str) and actor else None

    def back(self, request: Request, route: str, message: str, **params: str) -> Response:
        url = _path(request, route, params)
        return RedirectResponse(f"{url}?{urlencode({'msg': message})}", status_code=303)

    # --- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request, template: str = "overview.html") -> Response:
        counts = await run_in_threadpool(self.counts.get)
        groups = await run_in_threadpool(self.groups.get)
        found = await self.read(
            lambda c: data.overview(c, stuck_after=self.stuck_after, counts=counts, groups=groups)
        )
        return self.page(request, template, overview=found)

    async def overview_live(self, request: Request) -> Response:
        return await self.overview(request, "_overview_live.html")

    async def search(self, request: Request) -> Response:
        params = request.query_params
        if any(forms.NUL in value for value in params.values()):
            return PlainTextResponse(forms.NUL_REFUSED, status_code=400)
        try:
            query = data.Search(
                saga_type=params.get("type", "").strip(),
                state=params.get("state", "").strip(),
                prefix=params.get("id", "").strip(),
                older_than=forms.minutes(params.get("older_than_minutes", "")),
                stuck_after=self.stuck_after if params.get("stuck") else None,
                after=(params["after_type"], params["after_id"])
                if "after_type" in params and "after_id" in params
                else None,
                after_created=forms.created(params.get("after_created", "")),
            )
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)

        page = await self.read(lambda c: data.search(c, query))
        # The registered sagas' types: a DISTINCT over the saga table is a full scan.
        types = sorted(self.sagas)
        next_url = None
        if page.next_after is not None:
            cursor = ("after_type", "after_id", "after_created")
            kept = {k: v for k, v in params.items() if k not in cursor}
            after = {"after_type": page.next_after[0], "after_id": page.next_after[1]}
            if page.next_created is not None:
                after["after_created"] = page.next_created.isoformat()
            next_url = "?" + urlencode({**kept, **after})
        return self.page(
            request, "search.html", query=query, page=page, types=types, next_url=next_url
        )

    async def instance(self, request: Request) -> Response:
        saga_type = request.path_params["saga_type"]
        correlation_id = request.path_params["correlation_id"]
        detail = None
        if forms.NUL not in saga_type + correlation_id:
            detail = await self.read(lambda c: saga_detail(c, saga_type, correlation_id))
        if detail is None:
            return self.page(
                request,
                "missing.html",
                what=f"no {saga_type} saga has id {correlation_id!r}",
                status_code=404,
            )
        cls = self.sagas.get(saga_type)
        diagram = reachable = None
        if cls is not None:
            diagram = svg(cls, detail.path, detail.summary.state)
            reachable = sorted(reachable_from(cls, detail.summary.state))
        return self.page(
            request,
            "instance.html",
            detail=detail,
            diagram=diagram,
            reachable=reachable,
            known=cls is not None,
            now=clock.now(),
        )

    async def dead_letters(self, request: Request) -> Response:
        try:
            number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return PlainTextResponse("page must be a number, 1 for the first", status_code=400)
        counted = await run_in_threadpool(self.groups.get)
        start = (number - 1) * GROUPS_PER_PAGE
        groups = counted.groups[start : start + GROUPS_PER_PAGE]

        def work(connection: Connection) -> tuple[Any, Any]:
            by_group = data.letters_by_group(connection, per_group=LETTERS_PER_GROUP, groups=groups)
            return by_group, recent_actions(connection, limit=20)

        by_group, log = await self.read(work)
        return self.page(
            request,
            "dead_letters.html",
            counted=counted,
            groups=groups,
            by_group=by_group,
            log=log,
            per_group=LETTERS_PER_GROUP,
            number=number,
            next_page=number + 1 if start + GROUPS_PER_PAGE < len(counted.groups) else None,
            now=clock.now(),
        )

    async def dead_letter(self, request: Request) -> Response:
        letter_id = request.path_params["letter_id"]
        if letter_id > forms.MAX_ID:
            what = f"no dead letter has id {letter_id}: ids are 64-bit numbers"
            return self.page(request, "missing.html", what=what, status_code=404)
        try:
            letter = await self.read(lambda c: get_dead_letter(c, letter_id))
        except SagaboxError as exc:
            return self.page(request, "missing.html", what=str(exc), status_code=404)
        body = letter.body.decode("utf-8", errors="backslashreplace")
        return self.page(request, "dead_letter.html", letter=letter, body=body)

    async def graph(self, request: Request) -> Response:
        if not self.apps:
            return self.page(request, "graph.html", mermaid=None, problems=[])
        from sagabox import graph

        flow = graph.build(self.apps)
        return self.page(
            request, "graph.html", mermaid=graph.mermaid(flow), problems=graph.check(flow)
        )

    # --- actions ----------------------------------------------------------------------------

    async def timeout_action(self, request: Request) -> Response:
        allowed = await self.action_form(request)
        if isinstance(allowed, Response):
            return allowed
        actor, form = allowed
        saga_type, correlation_id = form.get("saga_type", ""), form.get("correlation_id", "")
        name, action = form.get("name", ""), form.get("action", "")

        def work() -> str:
            with self.engine.begin() as connection:
                if action == "cancel":
                    cancel_timeout(connection, saga_type, correlation_id, name, actor=actor)
                    return f"timeout {name} cancelled"
                if action == "fire":
                    fire_timeout(connection, saga_type, correlation_id, name, actor=actor)
                    return f"timeout {name} is due now"
                if action == "reschedule":
                    due = forms.due_time(form.get("due", ""))
                    reschedule_timeout(
                        connection, saga_type, correlation_id, name, due, actor=actor
                    )
                    return f"timeout {name} moved to {due:%Y-%m-%d %H:%M:%S} UTC"
                raise ValueError(f"unknown timeout action {action!r}: cancel, reschedule or fire")

        try:
            message = await run_in_threadpool(work)
        except (SagaError, ValueError) as exc:
            message = f"not done: {exc}"
        if not saga_type or "/" in saga_type or not correlation_id:
            # No instance page has that address (a forged form): the search page says why.
            return self.back(request, "search", message)
        return self.back(
            request, "instance", message, saga_type=saga_type, correlation_id=correlation_id
        )

    async def dead_letter_action(self, request: Request) -> Response:
        allowed = await self.action_form(request)
        if isinstance(allowed, Response):
            return allowed
        actor, form = allowed
        operation = form.get("op", "")
        if operation not in ("replay", "discard"):
            return PlainTextResponse("op must be replay or discard", status_code=400)
        act = replay_logged if operation == "replay" else discard_logged

        def work() -> str:
            if form.get("id"):
                ids = [forms.letter_id(form["id"])]
            else:
                type_name = form.get("type") or None
                with self.engine.connect() as connection:
                    ids = group_ids(
                        connection, form.get("endpoint", ""), type_name, form.get("reason", "")
                    )
            done, failed = 0, []
            for letter_id in ids:
                # One transaction per letter: one that cannot be replayed holds up no other.
                try:
                    with self.engine.begin() as connection:
                        act(connection, letter_id, actor=actor)
                    done += 1
                except SagaboxError as exc:
                    failed.append(f"{letter_id}: {exc}")
            self.groups.invalidate()  # the page it redirects to shows the groups as they are now
            message = f"{operation}: {done} of {len(ids)} dead letters"
            return message + (f"; not done: {'; '.join(failed)}" if failed else "")

        try:
            message = await run_in_threadpool(work)
        except ValueError as exc:
            message = f"not done: {exc}"
        return self.back(request, "dead_letters", message)


def create_app(
    engine: Engine,
    *,
    apps: Iterable[App] = (),
    actions: bool = False,
    authenticate: Authenticate | None = None,
    stuck_after: timedelta = timedelta(hours=1),
    refresh_seconds: int = 5,
    counts_max_age: timedelta = timedelta(minutes=1),
) -> Starlette:
    """The dashboard on `engine`, as an ASGI app to mount (`Mount("/sagabox", app=...)`) or run.

    `apps` lets it draw the sagas' diagrams and the message flow. It is read-only unless
    `actions` is true; then each action needs `authenticate(request)` (or an async one) to
    name who asks (the host app's own check), by default HTTP basic from $SAGABOX_WEB_USER and
    $SAGABOX_WEB_PASSWORD.
    The overview's type x state counts are recounted in the background once older than
    `counts_max_age` (a full index scan at a million sagas); the page shows their age.
    """
    if actions and authenticate is None:
        authenticate = basic_auth_from_env()
        if authenticate is None:
            raise ValueError(
                "dashboard actions need authentication: set SAGABOX_WEB_USER and "
                "SAGABOX_WEB_PASSWORD, or pass create_app(..., authenticate=your_check)"
            )
    board = Dashboard(
        engine,
        list(apps),
        actions=actions,
        authenticate=authenticate,
        stuck_after=stuck_after,
        refresh_seconds=refresh_seconds,
        counts_max_age=counts_max_age,
    )
    static = StaticFiles(directory=str(files("sagabox.web") / "static"))
    routes = [
        Route("/", board.overview, name="overview"),
        Route("/live/overview", board.overview_live, name="overview_live"),
        Route("/sagas", board.search, name="search"),
        Route("/sagas/{saga_type}/{correlation_id:path}", board.instance, name="instance"),
        Route("/dead-letters", board.dead_letters, name="dead_letters"),
        Route("/dead-letters/{letter_id:int}", board.dead_letter, name="dead_letter"),
        Route("/graph", board.graph, name="graph"),
        Route("/actions/timeout", board.timeout_action, methods=["POST"], name="timeout_action"),
        Route(
            "/actions/dead-letters",
            board.dead_letter_action,
            methods=["POST"],
            name="dead_letter_action",
        ),
        Mount("/static", app=static, name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = board
    return app


@pass_context
def _path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    request: Request = context["request"]
    return _path(request, name, params)


def _path(request: Request, name: str, params: Mapping[str, Any]) -> str:
    """The path of route `name`, each parameter percent-quoted: an id holding `#`, `?` or `%`
    would otherwise end the path early or be read back as another id."""
    return request.url_for(name, **{k: quote(str(v), safe="") for k, v in params.items()}).path


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _age(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
