"""A test client over aiohttp's real WebSocket client that checks every frame it receives
against the outbound schemas and the seq rules, and the two HTTP requests that come before
a connection: a WebSocket upgrade sent by hand and POST /auth/ticket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from myagent_ws.client import TERMINAL
from myagent_ws.protocol import Protocol

_protocol = Protocol()


class WsClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.last_seq: dict[str, int] = {}

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
        event = json.loads(msg.data)
        _protocol.check_outbound(event)
        if "seq" in event:
            sid = event["session_id"]
            expected = self.last_seq.get(sid, 0) + 1
            assert event["seq"] == expected, (
                f"seq gap or repeat: {event['seq']} after {expected - 1}"
            )
            assert event["event_id"] == f"{sid}:{event['seq']}"
            self.last_seq[sid] = event["seq"]
        self.received.append(event)
        return event

    async def expect(self, name: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Receive until an event named `name` (and matching fields) arrives."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                    return event

    async def error(self, code: str, timeout: float = 5.0) -> dict[str, Any]:
        event = await self.expect("system.error", timeout)
        assert event["metadata"]["code"] == code, event
        return event

    async def reconnect(self, session_id: str, last_seq: int) -> None:
        """Attach to a session, expecting its events from last_seq + 1 on."""
        self.last_seq[session_id] = last_seq
        await self.send(
            {"event": "user.reconnect", "session_id": session_id, "content": {"last_seq": last_seq}}
        )

    async def create_session(self, agent: str | None = None) -> str:
        message: dict[str, Any] = {"event": "user.create_session"}
        if agent is not None:
            message["content"] = {"agent": agent}
        await self.send(message)
        event = await self.expect("agent.session_created")
        return event["session_id"]

    async def until_terminal(self, session_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Events of one session up to and including its turn's terminal event."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                if event.get("session_id") != session_id:
                    continue
                events.append(event)
                if event["event"] in TERMINAL:
                    return events

    async def turn(self, session_id: str, text: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        await self.send({"event": "user.message", "session_id": session_id, "content": text})
        return await self.until_terminal(session_id, timeout)


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def http_url(server: Any, path: str) -> Any:
    """`path` on `server`: a TestServer from `serve`, or anything with an `http` base URL
    (a CliServer, a cluster Node)."""
    return server.make_url(path) if hasattr(server, "make_url") else server.http + path


def ws_url(server: Any, path: str = "/") -> str:
    """`path` on `server` (as for http_url) as a ws:// URL."""
    return str(http_url(server, path)).replace("http", "ws", 1)


async def upgrade(server: Any, path: str = "/", **headers: str) -> tuple[int, Any, Any]:
    """(status, JSON body or None, response headers) of one WebSocket upgrade request, sent
    by hand so that any header (Host, Origin) can be set: 101 is a connection let in."""
    sent = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(http_url(server, path), headers=sent) as response:
            is_json = response.content_type == "application/json"
            body = await response.json() if is_json else None
            return response.status, body, response.headers


async def ticket(server: Any, token: str | None = None, **headers: str) -> tuple[int, Any, Any]:
    """(status, JSON body, response headers) of POST /auth/ticket, with `token` as a Bearer
    header when given."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(http_url(server, "/auth/ticket"), headers=headers) as response:
            return response.status, await response.json(), response.headers
