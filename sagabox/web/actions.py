"""The dashboard's actions: who may act, the form's CSRF check, and the timeout and dead-letter
operations each run in a transaction of its own and journaled with the actor's name."""

from __future__ import annotations

import inspect
from urllib.parse import parse_qs, urlencode

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from outbox.dead_letter_groups import discard_logged, group_ids, replay_logged
from outbox.errors import SagaboxError
from sagabox.web import forms, rendering
from sagabox.web.counts import GroupsCache
from sagabox.web.security import CSRF_FIELD, Authenticate, BasicAuth, csrf_ok
from sagas.errors import SagaError
from sagas.timeout_admin import cancel_timeout, fire_timeout, reschedule_timeout


class DashboardActions:
    """The POST handlers of `Dashboard`; read-only unless `actions`, and each needs a name
    from `authenticate`."""

    engine: Engine
    actions: bool
    authenticate: Authenticate | None
    groups: GroupsCache

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
        url = rendering.path(request, route, params)
        return RedirectResponse(f"{url}?{urlencode({'msg': message})}", status_code=303)

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
