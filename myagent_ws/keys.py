"""Typed application keys: state lives on the Application, never in module globals."""

from __future__ import annotations

from typing import Any

import pluggy
from aiohttp import web

from .connection import Connection
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
