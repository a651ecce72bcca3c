"""How the dashboard's templates write times, ages and links: filters and the `url_for` they use."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import pass_context
from starlette.requests import Request


@pass_context
def path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    """The templates' `url_for`: a path (with the mount prefix), not an absolute URL."""
    request: Request = context["request"]
    return path(request, name, params)


def path(request: Request, name: str, params: Mapping[str, Any]) -> str:
    """The path of route `name`, each parameter percent-quoted: an id holding `#`, `?` or `%`
    would otherwise end the path early or be read back as another id."""
    return request.url_for(name, **{k: quote(str(v), safe="") for k, v in params.items()}).path


def when(value: datetime | None) -> str:
    """A time as the pages show it (UTC, to the second)."""
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def age(value: timedelta | None) -> str:
    """An age in its largest whole unit: 90s, 15m, 5h, 3d."""
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
