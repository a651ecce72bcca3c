"""The operations dashboard (`pip install 'sagabox[web]'`): find a saga, see its story, act on
timeouts and dead letters, in server-rendered pages with no JavaScript build step.

    from sagabox.web import create_app
    app.mount("/sagabox", create_app(engine, apps=[orders_app]))
"""

from __future__ import annotations

try:
    from sagabox.web.app import create_app
except ImportError as exc:  # starlette or jinja2 missing
    raise ImportError(
        f"the dashboard needs its optional dependencies ({exc}): pip install 'sagabox[web]'"
    ) from exc

__all__ = ["create_app"]
