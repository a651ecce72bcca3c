"""`sagabox web`: run the operations dashboard alone (it binds 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse
import sys

from sagabox.cli_common import Groups, database_argument


def add_to(groups: Groups) -> None:
    """Register the web subcommand."""
    web = groups.add_parser(
        "web", help="the operations dashboard in the browser (pip install 'sagabox[web]')"
    )
    database_argument(web)
    web.add_argument("--app", help="module:attribute of the App(s), for diagrams and the flow")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080)
    web.add_argument(
        "--actions",
        action="store_true",
        help="allow cancelling timeouts and replaying dead letters; needs SAGABOX_WEB_USER "
        "and SAGABOX_WEB_PASSWORD (HTTP basic)",
    )
    web.set_defaults(handler=_web, daemon=True)


def _web(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            f"`sagabox web` needs uvicorn ({exc}): pip install 'sagabox[web]'"
        ) from exc
    from outbox.database import make_engine
    from outbox.urls import mask_secrets
    from sagabox.app import load_apps
    from sagabox.web import create_app

    apps = load_apps(args.app) if args.app else []
    engine = make_engine(args.db)
    try:
        app = create_app(engine, apps=apps, actions=args.actions)
        mode = "actions enabled" if args.actions else "read-only"
        print(
            f"sagabox web: http://{args.host}:{args.port}/ on {mask_secrets(args.db)} ({mode})",
            file=sys.stderr,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        engine.dispose()
    return 0
