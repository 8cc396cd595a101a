"""HTTP side of the server: operator endpoints and the page a plain browser GET / gets.
It never parses protocol frames."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import __version__
from .keys import CONNECTIONS, REGISTRY, SESSIONS, STARTED_AT
from .protocol import PROTOCOL_VERSION

STATIC = Path(__file__).parent / "static"


async def health(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
            "connections": len(app[CONNECTIONS]),
            "sessions": len(app[SESSIONS]),
            "agents": app[REGISTRY].names(),
        }
    )


async def agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": request.app[REGISTRY].describe()})


async def index(request: web.Request) -> web.Response:
    """The web console: a page that talks to this same URL over WebSocket."""
    context = {
        "version": __version__,
        "protocol_version": PROTOCOL_VERSION,
        "agents": request.app[REGISTRY].describe(),
    }
    return aiohttp_jinja2.render_template("index.html", request, context)


def add_routes(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("myagent_ws", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    app.router.add_get("/health", health)
    app.router.add_get("/agents", agents)
