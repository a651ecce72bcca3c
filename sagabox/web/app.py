"""`create_app`: the dashboard as one Starlette ASGI app, to mount in a host app or run alone."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader
from sqlalchemy import Connection, Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from outbox import clock
from outbox.dead_letters import get_dead_letter
from outbox.errors import SagaboxError
from outbox.operator_log import recent_actions
from sagabox.web import data, forms, rendering
from sagabox.web.actions import DashboardActions
from sagabox.web.counts import CountsCache, GroupsCache
from sagabox.web.diagram import reachable_from, svg
from sagabox.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Authenticate,
    basic_auth_from_env,
    new_csrf_token,
)
from sagas.queries import saga_detail

if TYPE_CHECKING:
    from sagabox.app import App
    from sagas.definition import Saga

T = TypeVar("T")

#: Letters listed under each dead-letter group (the group's actions reach all of them).
LETTERS_PER_GROUP = 10
#: Dead-letter groups a page lists, the largest first; the next ones on the next page.
GROUPS_PER_PAGE = 20


class Dashboard(DashboardActions):
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
        environment.filters["when"] = rendering.when
        environment.filters["age"] = rendering.age
        environment.filters["pretty"] = lambda value: json.dumps(value, indent=2, default=str)
        self.templates = Jinja2Templates(env=environment)
        # Links as paths (with the mount prefix), not absolute URLs: right behind any proxy.
        environment.globals["url_for"] = rendering.path_for

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
