"""The bare reference server: our server's job (WebSocket sessions, an LLM tool-call turn,
streamed agent.* events) in plain aiohttp with no framework, validation, replay or limits.

    .venv/bin/python bench/reference_server.py --port 0 --llm-url http://127.0.0.1:9000/v1

It is the floor a benchmark measures myagent-ws against in the same run: whatever our server
costs beyond this is the price of its features. Frames have exactly our event shapes
(timestamp on every event; session_id, gapless seq and event_id on session events) so one
load client drives both. With no --llm-url it runs the same turn offline, with no HTTP.

Prints `READY <port>` once listening; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from serving import raise_open_files, run, serve_until_signal

AGENT = "weather-assistant"
MAX_STEPS = 5  # as the example agent: bounds the LLM calls of one turn
TEXT = aiohttp.WSMsgType.TEXT
SYSTEM = {
    "role": "system",
    "content": "You are a helpful weather assistant. Use get_weather for weather questions. "
    "Answer in the user's language, briefly.",
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. 北京 or Beijing"}
                },
                "required": ["city"],
            },
        },
    }
]
WEATHER = {
    "北京": "北京：晴，气温 25°C，湿度 40%，北风 2 级。",
    "beijing": "Beijing: sunny, 25°C, humidity 40%, north wind 8 km/h.",
    "上海": "上海：多云，气温 28°C，湿度 65%，东南风 3 级。",
    "shanghai": "Shanghai: cloudy, 28°C, humidity 65%, southeast wind 14 km/h.",
    "london": "London: light rain, 14°C, humidity 82%, southwest wind 18 km/h.",
    "paris": "Paris: partly cloudy, 19°C, humidity 60%, west wind 11 km/h.",
}
OFFLINE_WORDS = ("北京", "今天", "晴，", "气温 ", "25°C，", "湿度 ", "40%，", "北风 ", "2 ", "级。")

CONFIG = web.AppKey("config", argparse.Namespace)
HTTP = web.AppKey("http", aiohttp.ClientSession)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)
_connection_ids = itertools.count(1)
_call_ids = itertools.count(1)


class LLMError(Exception):
    """The LLM endpoint answered badly; the turn ends with agent.error llm_error."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def get_weather(city: str) -> str:
    """The tool: one line of built-in weather, so the turn has real (tiny) tool work."""
    return WEATHER.get(city.strip().lower(), f"No weather data for {city}.")


class Connection:
    """One WebSocket and the sessions it owns; their turns die with it."""

    __slots__ = ("id", "sessions", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.id = f"c_{next(_connection_ids)}"
        self.sessions: dict[str, Session] = {}

    async def send(self, event: dict[str, Any]) -> None:
        """Encode once, send as a TEXT frame; a peer that is gone is not an error."""
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await self.ws.send_frame(orjson.dumps(event), TEXT)


class Session:
    """Message history and a gapless seq, like ours, minus persistence and replay."""

    __slots__ = ("conn", "history", "id", "seq", "task")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.id = "s_" + secrets.token_urlsafe(16)
        self.history: list[dict[str, Any]] = []
        self.seq = 0
        self.task: asyncio.Task[None] | None = None

    async def emit(self, event: dict[str, Any]) -> None:
        self.seq = seq = self.seq + 1
        event["timestamp"] = now()
        event["session_id"] = self.id
        event["seq"] = seq
        event["event_id"] = f"{self.id}:{seq}"
        await self.conn.send(event)

    async def thinking(self, step: int) -> None:
        await self.emit(
            {
                "event": "agent.thinking",
                "content": f"Thinking (step {step})…",
                "metadata": {"step": step},
            }
        )

    async def partial(self, text: str, step: int) -> None:
        await self.emit(
            {
                "event": "agent.partial_answer",
                "content": text,
                "metadata": {"is_final": False, "step": step},
            }
        )

    async def call_tool(self, call_id: str, args: dict[str, Any], step: int) -> str:
        """Emit tool_call, run get_weather, emit tool_result; the result text."""
        await self.emit(
            {
                "event": "agent.tool_call",
                "step_id": call_id,
                "content": "Calling tool: get_weather",
                "metadata": {"tool": "get_weather", "args": args, "call_id": call_id, "step": step},
            }
        )
        started = time.perf_counter()
        result = get_weather(str(args.get("city", "")))
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        await self.emit(
            {
                "event": "agent.tool_result",
                "step_id": call_id,
                "content": result,
                "metadata": {
                    "tool": "get_weather",
                    "status": "success",
                    "duration_ms": duration_ms,
                    "call_id": call_id,
                },
            }
        )
        return result

    async def finish(self, messages: list[dict[str, Any]], answer: str) -> None:
        """Keep the turn in memory and send its one terminal event."""
        self.history.extend(messages)
        self.history.append({"role": "assistant", "content": answer})
        await self.emit({"event": "agent.final_answer", "content": answer})


async def stream_reply(
    http: aiohttp.ClientSession, url: str, session: Session, messages: list, step: int
) -> tuple[str, list[dict[str, str]]]:
    """One streamed chat completion: each content delta goes out as a partial_answer as it
    arrives; returns the whole text and the tool calls (folded by index)."""
    payload = {"model": "fake", "stream": True, "messages": messages, "tools": TOOLS}
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    done = False
    headers = {"Content-Type": "application/json", "Authorization": "Bearer x"}
    async with http.post(url, data=orjson.dumps(payload), headers=headers) as resp:
        if resp.status != 200:
            raise LLMError(f"The LLM endpoint answered HTTP {resp.status}.")
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            for choice in orjson.loads(data).get("choices") or ():
                delta = choice.get("delta") or {}
                content = delta.get("content")
                if content:
                    text.append(content)
                    await session.partial(content, step)
                for part in delta.get("tool_calls") or ():
                    empty = {"id": "", "name": "", "arguments": ""}
                    call = calls.setdefault(part.get("index") or 0, empty)
                    call["id"] = call["id"] or part.get("id") or ""
                    function = part.get("function") or {}
                    call["name"] = call["name"] or function.get("name") or ""
                    call["arguments"] += function.get("arguments") or ""
    if not done:
        raise LLMError("The LLM endpoint closed the stream before [DONE].")
    return "".join(text), [calls[i] for i in sorted(calls)]


async def llm_turn(http: aiohttp.ClientSession, url: str, session: Session, text: str) -> None:
    turn: list[dict[str, Any]] = [{"role": "user", "content": text}]
    for step in range(1, MAX_STEPS + 1):
        await session.thinking(step)
        answer, calls = await stream_reply(
            http, url, session, [SYSTEM, *session.history, *turn], step
        )
        if not calls:
            await session.finish(turn, answer)
            return
        turn.append(
            {
                "role": "assistant",
                "content": answer or None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in calls
                ],
            }
        )
        for call in calls:
            args = orjson.loads(call["arguments"] or "{}")
            result = await session.call_tool(call["id"], args, step)
            turn.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise LLMError(f"The model still wanted tools after {MAX_STEPS} steps.")


async def offline_turn(session: Session, text: str, tokens: int) -> None:
    """The same event sequence with no HTTP: what the server costs with a free LLM."""
    await session.thinking(1)
    call_id = f"call_{next(_call_ids)}"
    result = await session.call_tool(call_id, {"city": "北京"}, 1)
    await session.thinking(2)
    parts = [OFFLINE_WORDS[i % len(OFFLINE_WORDS)] for i in range(tokens)]
    for part in parts:
        await session.partial(part, 2)
        await asyncio.sleep(0)
    turn = [
        {"role": "user", "content": text},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "北京"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]
    await session.finish(turn, "".join(parts))


async def run_turn(app: web.Application, session: Session, text: str) -> None:
    """One turn; exactly one terminal event whatever happens (but nothing once cancelled)."""
    config = app[CONFIG]
    try:
        if config.llm_url:
            await llm_turn(app[HTTP], config.completions_url, session, text)
        else:
            await offline_turn(session, text, config.offline_tokens)
    except Exception as exc:
        message = f"LLM request failed ({type(exc).__name__}): {exc}"[:200]
        await session.emit(
            {"event": "agent.error", "content": message, "metadata": {"code": "llm_error"}}
        )


async def handle(conn: Connection, app: web.Application, message: dict[str, Any]) -> None:
    event = message.get("event")
    if event == "user.create_session":
        session = Session(conn)
        conn.sessions[session.id] = session
        url = app[CONFIG].llm_url
        if url:
            llm = {"provider": "openai", "model": "fake", "offline": False, "base_url": url}
        else:
            llm = {"provider": "offline", "model": "offline", "offline": True}
        await session.emit(
            {
                "event": "agent.session_created",
                "content": {"session_id": session.id, "agent": AGENT},
                "metadata": {"agent": AGENT, "llm": llm},
            }
        )
    elif event == "user.message":
        session = conn.sessions[message["session_id"]]
        if session.task is not None and not session.task.done():
            await conn.send(
                {
                    "event": "system.error",
                    "session_id": session.id,
                    "content": "busy",
                    "metadata": {"code": "session_busy"},
                    "timestamp": now(),
                }
            )
            return
        text = message.get("content") or ""
        session.task = asyncio.create_task(run_turn(app, session, text))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    conn = Connection(ws)
    await conn.send(
        {
            "event": "system.connected",
            "content": "Connected to myagent-ws.",
            "metadata": {
                "connection_id": conn.id,
                "server_version": "ref",
                "protocol_version": 1,
                "agents": [AGENT],
            },
            "timestamp": now(),
        }
    )
    try:
        async for msg in ws:
            if msg.type is TEXT:
                # No validation (this is the floor); a bad frame is just dropped.
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    await handle(conn, request.app, orjson.loads(msg.data))
    finally:
        for session in conn.sessions.values():
            if session.task is not None:
                session.task.cancel()
    return ws


async def http_client(app: web.Application) -> AsyncIterator[None]:
    """One client session for the whole process, no per-host connection limit."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as http:
        app[HTTP] = http
        yield


async def close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS]):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def serve(config: argparse.Namespace) -> None:
    app = web.Application()
    app[CONFIG] = config
    app[SOCKETS] = weakref.WeakSet()
    app.router.add_get("/", websocket)
    app.cleanup_ctx.append(http_client)
    app.on_shutdown.append(close_sockets)
    await serve_until_signal(app, config.host, config.port, shutdown_timeout=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--llm-url", help="OpenAI-compatible base URL ending in /v1")
    parser.add_argument("--offline-tokens", type=int, default=40)
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop")
    config = parser.parse_args()
    config.completions_url = f"{(config.llm_url or '').rstrip('/')}/chat/completions"
    raise_open_files()
    run(serve(config), config.uvloop)


if __name__ == "__main__":
    main()
