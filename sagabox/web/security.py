"""Who may act on the dashboard: HTTP basic from the environment or the host app's own check,
and the CSRF token every action form carries (a double-submit cookie)."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request

#: The user and password `sagabox web --actions` accepts over HTTP basic authentication.
USER_ENV = "SAGABOX_WEB_USER"
PASSWORD_ENV = "SAGABOX_WEB_PASSWORD"  # noqa: S105 - the name of a variable, not a password

#: Returns who is asking (the actor written to the operator log), or None to refuse; an async
#: check (a host app's, awaiting its session store) is awaited.
Authenticate = Callable[[Request], "str | Awaitable[str | None] | None"]

CSRF_COOKIE = "sagabox_csrf"
CSRF_FIELD = "csrf_token"


class BasicAuth:
    """HTTP basic authentication against one user and password, compared in constant time."""

    #: Sent with a 401 so a browser asks for the credentials.
    challenge = 'Basic realm="sagabox", charset="UTF-8"'

    def __init__(self, user: str, password: str) -> None:
        if not user or not password:
            raise ValueError("BasicAuth needs a user and a non-empty password")
        if ":" in user:  # the header splits at the first colon: such a user could never log in
            raise ValueError(
                f"the basic-auth user {user!r} holds a ':', which HTTP basic cannot carry "
                f"(${USER_ENV}): pick a user name without one (the password may have colons)"
            )
        self._user = user.encode()
        self._password = password.encode()

    def __call__(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        # Both compared every time, so the timing says nothing about which one was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        return user.decode("utf-8", "replace") if user_ok and password_ok else None


def basic_auth_from_env(environ: Mapping[str, str] | None = None) -> BasicAuth | None:
    """`BasicAuth` from $SAGABOX_WEB_USER and $SAGABOX_WEB_PASSWORD, or None if either is unset."""
    environ = os.environ if environ is None else environ
    user, password = environ.get(USER_ENV, ""), environ.get(PASSWORD_ENV, "")
    return BasicAuth(user, password) if user and password else None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """The form's token equals the cookie's: another site can make the browser send the
    cookie, but cannot read it to put it in the form."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie, submitted or "")
