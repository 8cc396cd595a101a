"""HTTP side of the server: the console page a plain browser GET / gets, and the operator
endpoints (health, readiness, metrics, schemas, AsyncAPI). It never parses protocol frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import __version__
from .asyncapi import build_asyncapi
from .keys import (
    CONNECTIONS,
    GATE,
    MAIN_APP,
    METRICS,
    PROTOCOL,
    READY,
    REGISTRY,
    SESSIONS,
    STARTED_AT,
)
from .protocol import PROTOCOL_VERSION

STATIC = Path(__file__).parent / "static"


def _main(request: web.Request) -> web.Application:
    """The server's application, also when asked through the separate health port."""
    return request.app.get(MAIN_APP, request.app)


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    app = _main(request)
    return web.json_response(
        {
            "status": "ok",
            "node": app[SESSIONS].node_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
            "connections": len(app[CONNECTIONS]),
            "sessions": len(app[SESSIONS]),
            "agents": app[REGISTRY].names(),
        }
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness: false while starting, while draining on shutdown, and while the Redis
    store is out of reach."""
    main = _main(request)
    is_ready = main[READY].is_set() and main[SESSIONS].ready
    return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    registry = _main(request)[METRICS]
    response = web.Response(body=registry.render())
    response.content_type = "text/plain"
    response.headers["Content-Type"] = registry.content_type
    return response


async def agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": request.app[REGISTRY].describe()})


async def schema(request: web.Request) -> web.Response:
    """One schema file of the protocol, as the server validates with it."""
    found = request.app[PROTOCOL].schemas.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound(text="No such schema; /asyncapi.json lists every event.")
    return web.json_response(found)


async def index(request: web.Request) -> web.Response:
    """The web console: a page that talks to this same URL over WebSocket."""
    registry = request.app[REGISTRY]
    default = registry.default()
    context = {
        "version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "agents": registry.describe(),
        # Who a session started without a name gets: the page's first message goes there.
        "default_agent": default.name if default is not None else None,
        # With auth on, the page asks for a token and trades it for a ticket per connection.
        "auth_required": request.app[GATE].auth.enabled,
    }
    return aiohttp_jinja2.render_template("index.html", request, context)


def add_routes(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("myagent_ws", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    add_operator_routes(app)
    app.router.add_get("/agents", agents)
    app.router.add_get("/schemas/{name}.json", schema)
    # The schemas are fixed at start-up, so the document is built once.
    document = build_asyncapi(app[PROTOCOL].schemas, __version__)

    async def asyncapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/asyncapi.json", asyncapi)


def add_operator_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)


def operator_app(main: web.Application) -> web.Application:
    """health, ready and metrics alone, for a second port (--health-port)."""
    app = web.Application()
    app[MAIN_APP] = main
    add_operator_routes(app)
    return app
