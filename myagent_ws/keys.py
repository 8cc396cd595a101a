"""Typed application keys: state lives on the Application, never in module globals."""

from __future__ import annotations

import asyncio
from typing import Any

import pluggy
from aiohttp import web

from .connection import Connection
from .gate import Gate
from .metrics import Metrics
from .protocol import Protocol
from .registry import AgentRegistry
from .sessions import SessionManager
from .settings import Settings
from .store import Store

PLUGINS = web.AppKey("plugins", pluggy.PluginManager)
SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", AgentRegistry)
PROTOCOL = web.AppKey("protocol", Protocol)
MODEL = web.AppKey("model", Any)
STORE = web.AppKey("store", Store)
SESSIONS = web.AppKey("sessions", SessionManager)
CONNECTIONS = web.AppKey("connections", set[Connection])
STARTED_AT = web.AppKey("started_at", float)
READY = web.AppKey("ready", asyncio.Event)
METRICS = web.AppKey("metrics", Metrics)
GATE = web.AppKey("gate", Gate)
# On the --health-port application: the server application it reports on.
MAIN_APP = web.AppKey("main_app", web.Application)
