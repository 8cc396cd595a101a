"""create_app(settings, registry) -> web.Application. No argv, no run_app: the CLI and the
tests both build the same application here."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pluggy
from aiohttp import WSCloseCode, web

from myagent.llm import model_from_env

from . import agui, console, drain
from .auth import AGUI_SUBPROTOCOL, SPOKEN, Auth
from .cluster import SharedSessions
from .connection import Connection
from .gate import Gate
from .keys import (
    CONNECTIONS,
    GATE,
    METRICS,
    MODEL,
    PLUGINS,
    PROTOCOL,
    READY,
    REGISTRY,
    SESSIONS,
    SETTINGS,
    STARTED_AT,
    STORE,
)
from .metrics import Metrics
from .node import Node
from .outbound import broadcast
from .plugins import make_plugin_manager
from .protocol import Protocol, make_event
from .redis_store import RedisStore
from .registry import AgentRegistry
from .sessions import SessionManager
from .settings import Settings
from .store import MemoryStore, Store

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    registry: AgentRegistry,
    *,
    pm: pluggy.PluginManager | None = None,
    model: Any = None,
    store: Store | None = None,
    handle_signals: bool = False,
) -> web.Application:
    """Build the server. `pm` carries the loaded plugins' hooks; `model` serves agents that
    bring none (default: from settings and the environment). With `handle_signals`,
    SIGTERM and SIGINT drain it (drain.py): for `web.run_app(..., handle_signals=False)`."""
    app = web.Application()
    app[PLUGINS] = pm if pm is not None else make_plugin_manager()
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[PROTOCOL] = Protocol(max_frame_bytes=settings.max_frame_bytes)
    app[MODEL] = model if model is not None else model_for(settings)
    app[STORE] = store if store is not None else store_for(settings)
    app[CONNECTIONS] = set()
    app[METRICS] = Metrics(
        lambda: len(app[CONNECTIONS]),
        lambda: len(app[SESSIONS]),
        lambda: sum(1 for s in app[SESSIONS].sessions.values() if s.busy),
    )
    manager = SharedSessions if isinstance(app[STORE], RedisStore) else SessionManager
    app[SESSIONS] = manager(registry, app[STORE], settings, app[MODEL], app[METRICS])
    if isinstance(app[STORE], RedisStore):
        app[SESSIONS].node = Node(app[SESSIONS], app[STORE], app[METRICS])
        app[METRICS].tally(
            "myagent_ws_redis_errors",
            "Redis calls that failed after their retries, by call.",
            "call",
            app[STORE].errors,
        )
    app[GATE] = gate = Gate(settings, Auth(settings, app[PLUGINS].hook, app[STORE]))
    app[STARTED_AT] = time.monotonic()
    app[READY] = asyncio.Event()
    app.router.add_get("/", endpoint)
    app.router.add_post("/auth/ticket", gate.ticket)
    app.router.add_route("OPTIONS", "/auth/ticket", gate.ticket_preflight)
    console.add_routes(app)
    agui.add_routes(app)
    app.cleanup_ctx.append(_background_tasks)  # closes the store: set up first, so last
    if isinstance(app[STORE], RedisStore):
        app.cleanup_ctx.append(_cluster_node)
    if settings.health_port is not None:
        app.cleanup_ctx.append(_health_port)
    app.on_startup.append(_ready)
    if handle_signals:
        app.on_startup.append(drain.handle_signals)
    app.on_shutdown.append(_end_sessions_and_close)
    hook = app[PLUGINS].hook
    hook.prepare_app(app=app, settings=settings)
    if hook.observe_event.get_hookimpls():
        app[SESSIONS].observe = _observer(hook)
    return app


def _observer(hook: Any) -> Any:
    """One observer that calls every observe_event implementation, awaiting async ones."""

    async def observe(session_id: str, event: dict[str, Any]) -> None:
        for result in hook.observe_event(session_id=session_id, event=event):
            if inspect.isawaitable(result):
                await result

    return observe


def store_for(settings: Settings) -> Store:
    """In memory, or in Redis (shared by every process given the same URL and prefix)."""
    if settings.store == "memory":
        return MemoryStore()
    return RedisStore(
        settings.store,
        settings.store_prefix,
        ttl_s=settings.session_ttl_s,
        max_events=settings.replay_buffer,
        max_bytes=settings.replay_buffer_bytes,
    )


async def _cluster_node(app: web.Application) -> AsyncIterator[None]:
    """Join the cluster (lease, tail, control, watch) for as long as the app runs."""
    node = app[SESSIONS].node
    await node.start()
    yield
    await node.stop()


def model_for(settings: Settings) -> Any:
    """The model for agents that bring none: OpenAI-compatible if configured, else offline."""
    return model_from_env(
        model=settings.model,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        timeout=settings.llm_timeout_s,
    )


async def endpoint(request: web.Request) -> web.StreamResponse:
    """GET /: a WebSocket upgrade is a client connection (once the gate lets it in); a
    plain GET gets the page."""
    app = request.app
    settings = app[SETTINGS]
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_ping_s or None,
        compress=settings.ws_compression,
        max_msg_size=settings.max_frame_bytes * settings.frame_ceiling_factor,
        protocols=SPOKEN,
    )
    gate = app[GATE]
    if (refused := gate.subprotocol_refusal(request)) is not None:
        return refused
    if not ws.can_prepare(request).ok:
        return await console.index(request)
    admission = await gate.admit(request)
    if isinstance(admission, web.Response):
        return admission
    try:
        await ws.prepare(request)
        if ws.ws_protocol == AGUI_SUBPROTOCOL:  # the AG-UI binding: its own reader
            from . import agui_socket  # with ag_ui: loaded by the first AG-UI client

            connection = agui_socket.Socket(
                ws, app[agui.AGUI], app[PROTOCOL], settings, admission.principal
            )
        else:
            connection = Connection(
                ws, app[SESSIONS], app[PROTOCOL], settings, request.transport, admission.principal
            )
        if settings.debug:
            log.debug("%s: from %s as %s", connection.id, admission.ip, admission.principal)
        app[CONNECTIONS].add(connection)
        try:
            await connection.serve(app[REGISTRY].names())
        finally:
            app[CONNECTIONS].discard(connection)
    finally:
        gate.release(admission)
    return ws


async def _heartbeat(app: web.Application, interval_s: float) -> None:
    """One app-wide timer, one encode per tick, however many connections there are."""
    while True:
        await asyncio.sleep(interval_s)
        metadata = {
            "active_sessions": len(app[SESSIONS]),
            "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
        }
        broadcast(app[CONNECTIONS], make_event("system.heartbeat", metadata=metadata))


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    tasks = [asyncio.create_task(app[SESSIONS].run_reaper(), name="session reaper")]
    if settings.heartbeat_s > 0:
        tasks.append(asyncio.create_task(_heartbeat(app, settings.heartbeat_s), name="heartbeat"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[STORE].close()
    aclose = getattr(app[MODEL], "aclose", None)
    if aclose is not None:
        await aclose()


async def _ready(app: web.Application) -> None:
    # What the model builds on first use (the HTTP client, its imports) is built now, so
    # the first turn does not stall the event loop for every connection.
    warm_up = getattr(app[MODEL], "warm_up", None)
    if warm_up is not None:
        warm_up()
    app[READY].set()


async def _health_port(app: web.Application) -> AsyncIterator[None]:
    """A second listener with only the operator endpoints."""
    settings = app[SETTINGS]
    runner = web.AppRunner(
        console.operator_app(app), access_log=None, keepalive_timeout=settings.handshake_timeout_s
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.health_port).start()
    yield
    await runner.cleanup()


async def _end_sessions_and_close(app: web.Application) -> None:
    """Shutdown: not ready any more, interrupt turns, tell every session it ended, flush,
    then close sockets."""
    app[READY].clear()
    await app[SESSIONS].shutdown()
    await asyncio.gather(
        *(
            c.close(code=WSCloseCode.GOING_AWAY, timeout_s=app[SETTINGS].shutdown_timeout_s)
            for c in tuple(app[CONNECTIONS])
        ),
        return_exceptions=True,
    )
