"""HTTP side of the server: operator endpoints and the page a plain browser GET / gets.
It never parses protocol frames."""

from __future__ import annotations

import time

from aiohttp import web

from . import __version__
from .keys import CONNECTIONS, REGISTRY, SESSIONS, STARTED_AT


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
    names = ", ".join(request.app[REGISTRY].names())
    return web.Response(
        text=(
            f"myagent-ws {__version__}: connect a WebSocket client to this URL.\n"
            f"Agents: {names}\nHealth: /health  Agents: /agents\n"
        )
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/agents", agents)
